//! `${secret:NAME}` references in step configs, resolved at run time from the configured
//! source and never written anywhere: the resolved config only lives in the stage's
//! private temp dir, and every log line is scrubbed of the resolved values.

use std::path::PathBuf;

use serde_json::Value;

/// Where secret values come from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// Environment variables `<prefix><NAME>` of the runner process.
    Env {
        /// Variable prefix, e.g. `FLEXCORE_SECRET_`.
        prefix: String,
    },
    /// One file per secret, `<dir>/<NAME>` (Kubernetes secret volumes); trailing newline trimmed.
    Dir(PathBuf),
}

/// A reference that could not be resolved.
#[derive(Debug, thiserror::Error)]
#[error("secret {name:?} is not available from {source_desc}: define it there (the value is never logged)")]
pub struct MissingSecret {
    /// The secret's name.
    pub name: String,
    /// The source that was asked.
    pub source_desc: String,
}

impl SecretSource {
    fn lookup(&self, name: &str) -> Result<String, MissingSecret> {
        let (value, source_desc) = match self {
            Self::Env { prefix } => (
                std::env::var(format!("{prefix}{name}")).ok(),
                format!("environment variable {prefix}{name}"),
            ),
            Self::Dir(dir) => (
                std::fs::read_to_string(dir.join(name))
                    .ok()
                    .map(|v| v.trim_end_matches(['\n', '\r']).to_owned()),
                format!("file {}", dir.join(name).display()),
            ),
        };
        value.ok_or(MissingSecret {
            name: name.to_owned(),
            source_desc,
        })
    }
}

/// Replaces every `${secret:NAME}` in the string values of `config` (a JSON text);
/// returns the resolved text and the resolved values, so logs can be scrubbed of them.
/// Everything else in the text (numbers, key order, spacing, escapes) stays as written.
pub fn resolve(config: &str, source: &SecretSource) -> Result<(String, Vec<String>), MissingSecret> {
    let mut revealed = Vec::new();
    let mut out = String::with_capacity(config.len());
    let mut rest = config;
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..open]);
        let token_len = string_token_len(&rest[open..]);
        let token = &rest[open..open + token_len];
        match serde_json::from_str::<String>(token) {
            Ok(text) if text.contains("${secret:") => {
                let resolved = substitute(&text, source, &mut revealed)?;
                out.push_str(&Value::String(resolved).to_string());
            }
            _ => out.push_str(token),
        }
        rest = &rest[open + token_len..];
    }
    out.push_str(rest);
    Ok((out, revealed))
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

fn substitute(s: &str, source: &SecretSource, revealed: &mut Vec<String>) -> Result<String, MissingSecret> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${secret:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "${secret:".len()..];
        let Some(end) = after.find('}') else {
            // Malformed references are refused by the command service; keep it verbatim.
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let value = source.lookup(&after[..end])?;
        if !value.is_empty() {
            revealed.push(value.clone());
        }
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `line` with every revealed secret value replaced by `[redacted]`.
pub fn scrub(line: &str, revealed: &[String]) -> String {
    revealed
        .iter()
        .fold(line.to_owned(), |l, secret| l.replace(secret.as_str(), "[redacted]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_from_a_directory_and_are_scrubbed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("DB_PASSWORD"), "hunter2\n").unwrap();
        let source = SecretSource::Dir(dir.path().to_owned());
        let config = r#"{"z": 1.10, "dsn":"postgres://u:${secret:DB_PASSWORD}@h/db","list":["\u0024{secret:DB_PASSWORD}", 3, "a\"${x}"],"big":123456789012345678901234567890}"#;
        let (resolved, revealed) = resolve(config, &source).unwrap();
        assert_eq!(
            resolved,
            r#"{"z": 1.10, "dsn":"postgres://u:hunter2@h/db","list":["hunter2", 3, "a\"${x}"],"big":123456789012345678901234567890}"#
        );
        assert_eq!(
            scrub("connecting with hunter2", &revealed),
            "connecting with [redacted]"
        );
        let missing = resolve(r#"{"x": "${secret:NOPE}"}"#, &source).unwrap_err();
        assert!(missing.to_string().contains("NOPE"));
    }
}
