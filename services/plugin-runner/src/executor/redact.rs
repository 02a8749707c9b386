//! Keeping resolved secret values out of everything an execution reports: log lines,
//! checkpoints (STATE and stream names), counters and failure messages.
//!
//! A plugin rarely prints a secret as is: it logs its config as JSON (`"pw":"a\"b"`),
//! builds a URL (`pw=a%22b`), an `Authorization: Basic` header (base64) or embeds one JSON
//! document in another. So a secret is matched in every such form: each of its characters
//! raw, JSON-escaped (once or twice, short escapes and `\uXXXX` in either case) or
//! percent-encoded (`+` for a space), in any mix; and base64 (standard and URL-safe, at
//! each of the three alignments it can have inside a longer encoding). A secret spanning
//! lines is also matched line by line (a PEM key logged as is). What a hostile plugin does
//! on purpose (reversing, splitting, encrypting a value it was given) cannot be caught by
//! any scrubber; see docs/security.md.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use flexcore_contracts::model::StreamCounters;
use flexcore_contracts::OpaqueJson;
use regex::{NoExpand, Regex, RegexBuilder};

use super::json_strings::map_json_strings;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Lines of a multi-line secret shorter than this are not matched on their own: they are
/// not secret enough to be worth a false positive (`-----END KEY-----` is 17).
const MIN_LINE_CHARS: usize = 8;
/// Base64 fragments shorter than this are not matched (too likely to occur by chance).
const MIN_BASE64_CHARS: usize = 6;
/// The compiled matcher may take this much memory (long secrets, e.g. keys, need room).
const REGEX_SIZE_LIMIT: usize = 64 << 20;

/// Secret values revealed to a stage (resolved into its config). Never printed: its
/// `Debug` shows only how many there are.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// The values (empty ones are dropped: there is nothing to hide).
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        Self(values.into_iter().filter(|v| !v.is_empty()).collect())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values.
    pub fn values(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

/// Replaces every encoding of a set of secret values with [`REDACTED`].
#[derive(Clone, Default)]
pub struct Redactor {
    matcher: Option<Matcher>,
}

#[derive(Clone)]
struct Matcher {
    regex: Regex,
    /// Longest text any match can cover, in bytes.
    longest: usize,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("active", &self.matcher.is_some())
            .finish()
    }
}

impl Redactor {
    /// A redactor of `secrets` (one that changes nothing when there are none).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut needles: Vec<&str> = Vec::new();
        for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
            needles.push(secret);
            if secret.contains(['\n', '\r']) {
                needles.extend(
                    secret
                        .split(['\n', '\r'])
                        .map(str::trim)
                        .filter(|l| l.chars().count() >= MIN_LINE_CHARS),
                );
            }
        }
        if needles.is_empty() {
            return Self::default();
        }
        // Longest first: of two secrets where one contains the other, the whole is hidden.
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        needles.dedup();
        let mut alternatives = Vec::new();
        let mut longest = 0;
        for needle in &needles {
            let (pattern, len) = encoded_forms(needle);
            alternatives.push(pattern);
            longest = longest.max(len);
        }
        let matcher = match RegexBuilder::new(&alternatives.join("|"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            Ok(regex) => Matcher { regex, longest },
            Err(error) => {
                // Too large to match in every encoding: match them as written at least.
                tracing::warn!(%error, secrets = needles.len(), "secrets too long to match in every encoding; scrubbing their raw form only");
                let raw: Vec<String> = needles.iter().map(|n| regex::escape(n)).collect();
                match Regex::new(&raw.join("|")) {
                    Ok(regex) => Matcher {
                        regex,
                        longest: needles.iter().map(|n| n.len()).max().unwrap_or(0),
                    },
                    Err(_) => return Self::default(),
                }
            }
        };
        Self { matcher: Some(matcher) }
    }

    /// Whether it redacts anything at all.
    pub fn is_active(&self) -> bool {
        self.matcher.is_some()
    }

    /// The longest text (in bytes) one match may cover: how far past a cut a line must be
    /// read so that no secret straddling the cut survives.
    pub fn lookahead(&self) -> usize {
        self.matcher.as_ref().map_or(0, |m| m.longest)
    }

    /// `text` with every secret replaced.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match &self.matcher {
            Some(m) => m.regex.replace_all(text, NoExpand(REDACTED)),
            None => Cow::Borrowed(text),
        }
    }

    /// The first `max` bytes of `text` (cut at a character boundary) with every secret
    /// replaced, and whether anything was cut. Matches are found in the whole of `text`
    /// first, so a secret that starts before the cut is replaced as a whole: the cut never
    /// leaves its prefix behind. `text` must extend at least [`Self::lookahead`] bytes past
    /// `max` where it was itself cut from something longer.
    pub fn redact_prefix(&self, text: &str, max: usize) -> (String, bool) {
        let mut out = String::with_capacity(text.len().min(max) + REDACTED.len());
        let mut at = 0;
        if let Some(m) = &self.matcher {
            for found in m.regex.find_iter(text) {
                if found.start() >= max {
                    break;
                }
                out.push_str(&text[at..found.start()]);
                out.push_str(REDACTED);
                at = found.end();
            }
        }
        if at < max {
            let end = floor_char_boundary(text, max);
            out.push_str(&text[at..end]);
            at = end;
        }
        (out, at < text.len())
    }

    /// A JSON value with every string (keys too) redacted; the rest of the text, numbers
    /// and escapes included, stays exactly as written.
    pub fn redact_json(&self, json: &OpaqueJson) -> OpaqueJson {
        if !self.is_active() {
            return json.clone();
        }
        let redacted = map_json_strings::<std::convert::Infallible>(json.as_str(), |text, _| {
            Ok(match self.redact(text) {
                Cow::Owned(changed) => Some(changed),
                Cow::Borrowed(_) => None,
            })
        });
        match redacted {
            Ok(text) => OpaqueJson::parse(&text).unwrap_or_else(|_| OpaqueJson::null()),
            Err(never) => match never {},
        }
    }

    /// Counters whose stream names are redacted (streams that become the same name are added up).
    pub fn redact_counters(&self, counters: StreamCounters) -> StreamCounters {
        if !self.is_active() {
            return counters;
        }
        let mut out = StreamCounters::new();
        for (stream, n) in counters {
            let total = out.entry(self.redact(&stream).into_owned()).or_insert(0);
            *total = total.saturating_add(n);
        }
        out
    }
}

/// The largest character boundary of `text` at or below `max`.
fn floor_char_boundary(text: &str, max: usize) -> usize {
    if max >= text.len() {
        return text.len();
    }
    (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}

/// One regex alternative matching `secret` in every encoding, and the longest text it can match.
fn encoded_forms(secret: &str) -> (String, usize) {
    let mut pattern = String::new();
    let mut longest = 0;
    for c in secret.chars() {
        let (alternative, len) = char_forms(c);
        pattern.push_str(&alternative);
        longest += len;
    }
    let mut forms = vec![pattern];
    for fragment in base64_fragments(secret.as_bytes()) {
        longest = longest.max(fragment.len());
        forms.push(regex::escape(&fragment));
    }
    (format!("(?:{})", forms.join("|")), longest)
}

/// `(?:…)` matching one character in each of its encodings, and the longest one.
fn char_forms(c: char) -> (String, usize) {
    // Literal forms, and forms whose hex digits may be in either case.
    let mut exact: Vec<String> = vec![c.to_string()];
    let mut any_case: Vec<String> = Vec::new();
    let short = match c {
        '"' => Some("\\\""),
        '\\' => Some("\\\\"),
        '/' => Some("\\/"),
        '\n' => Some("\\n"),
        '\r' => Some("\\r"),
        '\t' => Some("\\t"),
        '\u{8}' => Some("\\b"),
        '\u{c}' => Some("\\f"),
        _ => None,
    };
    let mut units = [0u16; 2];
    let unicode: String = c
        .encode_utf16(&mut units)
        .iter()
        .map(|u| format!("\\u{u:04x}"))
        .collect();
    // Once JSON-escaped.
    let once: Vec<String> = short.map(str::to_owned).into_iter().collect();
    exact.extend(once.iter().cloned());
    any_case.push(unicode.clone());
    // Twice (a JSON document logged inside another): escape the escapes.
    let again = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    for s in &once {
        exact.push(again(s));
    }
    any_case.push(again(&unicode));
    // Percent-encoded (any case), `+` for a space (form encoding).
    let mut utf8 = [0u8; 4];
    let percent: String = c.encode_utf8(&mut utf8).bytes().map(|b| format!("%{b:02X}")).collect();
    any_case.push(percent);
    if c == ' ' {
        exact.push("+".to_owned());
    }
    exact.sort();
    exact.dedup();
    let longest = exact.iter().chain(&any_case).map(String::len).max().unwrap_or(0);
    let mut alternatives: Vec<String> = exact.iter().map(|s| regex::escape(s)).collect();
    alternatives.extend(any_case.iter().map(|s| format!("(?i:{})", regex::escape(s))));
    (format!("(?:{})", alternatives.join("|")), longest)
}

/// The parts of `bytes`' base64 encodings that depend on `bytes` alone, for each of the
/// three offsets it can start at inside a longer encoding, in both alphabets.
fn base64_fragments(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for offset in 0..3usize {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(bytes);
        // Characters fully inside the secret's bits: from ⌈8·offset/6⌉ to ⌊8·len/6⌋.
        let first = (8 * offset).div_ceil(6);
        let end = 8 * padded.len() / 6;
        if end <= first || end - first < MIN_BASE64_CHARS {
            continue;
        }
        for engine in [
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            let encoded = engine.encode(&padded);
            if let Some(fragment) = encoded.get(first..end) {
                out.push(fragment.to_owned());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(secrets: &[&str], text: &str) -> String {
        Redactor::new(secrets.iter().copied()).redact(text).into_owned()
    }

    const HOSTILE: &str = "hunter2-\"q\\uote\\slash/é";

    #[test]
    fn every_encoding_is_redacted() {
        let json_once = serde_json::to_string(HOSTILE).unwrap();
        let json_twice = serde_json::to_string(&json_once).unwrap();
        let ascii_json = r#"hunter2-\u0022q\\uote\\slash\/\u00E9"#;
        let url: String = HOSTILE
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("user:{HOSTILE}"));
        let b64_url = base64::engine::general_purpose::URL_SAFE.encode(format!("x{HOSTILE}z"));
        for form in [
            HOSTILE.to_owned(),
            json_once.trim_matches('"').to_owned(),
            json_twice.trim_matches('"').to_owned(),
            ascii_json.to_owned(),
            url,
            b64,
            b64_url,
        ] {
            let line = format!("config: {{\"password\":\"{form}\"}} done");
            let out = redact(&[HOSTILE], &line);
            assert!(out.contains(REDACTED), "{form} not redacted: {out}");
            assert!(!out.contains("hunter2"), "{form} leaked: {out}");
            assert!(!out.contains("uote"), "{form} leaked: {out}");
        }
        assert_eq!(
            redact(&[HOSTILE], r#"{"password":"hunter2-\"q\\uote\\slash\/é"}"#),
            r#"{"password":"[redacted]"}"#
        );
        assert_eq!(redact(&["a b"], "x=a+b&y=a%20b"), "x=[redacted]&y=[redacted]");
    }

    #[test]
    fn text_without_secrets_is_untouched() {
        let r = Redactor::new(["s3cr3t-value"]);
        assert!(matches!(r.redact("nothing to see"), Cow::Borrowed(_)));
        let none = Redactor::new(std::iter::empty());
        assert!(!none.is_active());
        assert_eq!(none.lookahead(), 0);
        assert_eq!(none.redact_prefix("abcdef", 3), ("abc".to_owned(), true));
    }

    #[test]
    fn the_longer_of_overlapping_secrets_wins_and_lines_of_a_key_are_matched() {
        assert_eq!(redact(&["abc", "abcdef"], "abcdefg abc"), "[redacted]g [redacted]");
        let key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nshort\n-----END KEY-----";
        assert_eq!(
            redact(&[key], "line: MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"),
            "line: [redacted]"
        );
        assert_eq!(redact(&[key], "short"), "short");
    }

    #[test]
    fn a_cut_never_leaves_a_prefix_behind() {
        let secret = "0123456789abcdef";
        let r = Redactor::new([secret]);
        let line = format!("{}{secret}tail", "x".repeat(10));
        // The secret starts before the cut at 12 and ends after it.
        assert_eq!(
            r.redact_prefix(&line, 12),
            (format!("{}{REDACTED}", "x".repeat(10)), true)
        );
        assert_eq!(r.redact_prefix(&line, 10), ("x".repeat(10), true));
        assert_eq!(
            r.redact_prefix(&line, 1000),
            (format!("{}{REDACTED}tail", "x".repeat(10)), false)
        );
        assert!(r.lookahead() >= secret.len() * 3);
        // Cut at a character boundary.
        assert_eq!(r.redact_prefix("ééé", 3), ("é".to_owned(), true));
    }

    #[test]
    fn json_strings_and_keys_are_redacted_and_the_rest_kept() {
        let r = Redactor::new(["hunter2"]);
        let state = OpaqueJson::parse(
            r#"{"bookmarks": {"t_hunter2": {"v": 1.10}}, "n": 123456789012345678901, "x": "a\u0041"}"#,
        )
        .unwrap();
        assert_eq!(
            r.redact_json(&state).as_str(),
            r#"{"bookmarks": {"t_[redacted]": {"v": 1.10}}, "n": 123456789012345678901, "x": "a\u0041"}"#
        );
        let counters = StreamCounters::from([("a_hunter2".to_owned(), 2), ("a_[redacted]".to_owned(), 3)]);
        assert_eq!(
            r.redact_counters(counters),
            StreamCounters::from([("a_[redacted]".to_owned(), 5)])
        );
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secrets::new(["x".to_owned()])), "Secrets(1 redacted)");
    }
}
