//! Rewriting the strings of a JSON text without reformatting it: the config's secret
//! references are resolved and a STATE's secrets redacted in place, so every other byte
//! (numbers beyond a float's precision, key order, spacing, escapes) stays as written.

/// Calls `f(text, is_key)` for every string (object keys included) of the JSON text
/// `json`, decoded; a `Some` replaces that string (re-encoded). Everything else, numbers,
/// spacing, key order and the escapes of strings left alone, stays exactly as written.
pub(crate) fn map_json_strings<E>(
    json: &str,
    mut f: impl FnMut(&str, bool) -> Result<Option<String>, E>,
) -> Result<String, E> {
    let mut out = String::with_capacity(json.len());
    let mut rest = json;
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..open]);
        let token_len = string_token_len(&rest[open..]);
        let token = &rest[open..open + token_len];
        let after = &rest[open + token_len..];
        let is_key = after.trim_start().starts_with(':');
        match serde_json::from_str::<String>(token) {
            Ok(text) => match f(&text, is_key)? {
                Some(replaced) => out.push_str(&serde_json::Value::String(replaced).to_string()),
                None => out.push_str(token),
            },
            Err(_) => out.push_str(token),
        }
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// The length of the JSON string token at the start of `text` (which starts with `"`),
/// closing quote included; the rest of `text` when it is not closed.
fn string_token_len(text: &str) -> usize {
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return i + 1,
            _ => {}
        }
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_keys_are_mapped_and_the_rest_kept() {
        let text = r#"{"a\"b": [1.10, "x"], "k" : "\u0041", "n": 123456789012345678901}"#;
        let mut seen = Vec::new();
        let out = map_json_strings::<()>(text, |s, is_key| {
            seen.push((s.to_owned(), is_key));
            Ok((s == "x").then(|| "y\"".to_owned()))
        })
        .unwrap();
        assert_eq!(
            out,
            r#"{"a\"b": [1.10, "y\""], "k" : "\u0041", "n": 123456789012345678901}"#
        );
        let want = [("a\"b", true), ("x", false), ("k", true), ("A", false), ("n", true)];
        assert_eq!(seen, want.map(|(s, k)| (s.to_owned(), k)));
    }
}
