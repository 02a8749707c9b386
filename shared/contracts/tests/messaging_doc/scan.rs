//! Facts the contract crate cannot know because the services own them (which error codes
//! and `details.reason` values they return, the queries they answer, the failure codes of
//! runs), read from the services' source so the document cannot drift from them either.
//! Test code (`#[cfg(test)]` onwards, `tests` directories) is left out.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The non-test source of one file, relative to the repository root.
pub fn file(rel: &str) -> String {
    let path = root().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    strip_tests(&text).to_owned()
}

/// The non-test source of every `.rs` file under `rel` (recursively).
pub fn dir(rel: &str) -> Vec<String> {
    let mut out = Vec::new();
    walk(&root().join(rel), &mut out);
    out
}

fn walk(dir: &Path, out: &mut Vec<String>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_dir() {
            if name != "tests" {
                walk(&path, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" && !name.ends_with("_tests.rs") {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            out.push(strip_tests(&text).to_owned());
        }
    }
}

/// Test modules sit at the end of a file, after `#[cfg(test)]`.
fn strip_tests(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// Every `snake_case` word that directly follows `marker` and is closed by `"`, e.g. the
/// reasons after `"reason": "`.
pub fn words_after(sources: &[String], marker: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for text in sources {
        let mut rest = text.as_str();
        while let Some(at) = rest.find(marker) {
            rest = &rest[at + marker.len()..];
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !word.is_empty() && rest[word.len()..].starts_with('"') {
                out.insert(word);
            }
        }
    }
    out
}

/// The `ErrorReason` variants named in `sources`.
pub fn error_reasons(sources: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for text in sources {
        for piece in text.split("ErrorReason::").skip(1) {
            let variant: String = piece.chars().take_while(char::is_ascii_alphanumeric).collect();
            if variant.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                out.insert(variant);
            }
        }
    }
    out
}

/// The value of `const <name>: &str = "…"` in `source`.
pub fn const_str(source: &str, name: &str) -> String {
    let marker = format!("const {name}: &str = \"");
    let at = source
        .find(&marker)
        .unwrap_or_else(|| panic!("no `{marker}` found: update the messaging doc generator"));
    let rest = &source[at + marker.len()..];
    rest[..rest.find('"').unwrap_or(0)].to_owned()
}

/// Every `pub const NAME: &str = "value";` of `source` with the doc comment above it,
/// as `(value, doc)`.
pub fn documented_consts(source: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut doc = Vec::new();
    for line in source.lines().map(str::trim) {
        if let Some(text) = line.strip_prefix("///") {
            doc.push(text.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("pub const ") {
            if let Some((_, value)) = rest.split_once(": &str = \"") {
                let value = value.trim_end_matches(';').trim_end_matches('"');
                out.push((value.to_owned(), doc.join(" ")));
            }
            doc.clear();
        } else {
            doc.clear();
        }
    }
    out
}
