//! Keeps the configuration reference in `docs/operations.md` equal to `config/base.yaml`:
//! the table between the GENERATED markers is rebuilt from base.yaml (keys, defaults and
//! the comment above each key) and every key the settings types accept must be in it.
//! Regenerate with `FLEXCORE_UPDATE_DOCS=1 cargo test -p flexcore-config --test docs_reference`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use flexcore_config::Settings;

const DOC: &str = "docs/operations.md";
const BEGIN: &str = "<!-- BEGIN GENERATED config reference: FLEXCORE_UPDATE_DOCS=1 cargo test -p flexcore-config --test docs_reference -->";
const END: &str = "<!-- END GENERATED config reference -->";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One key of base.yaml.
struct Entry {
    section: String,
    key: String,
    value: String,
    comment: String,
}

/// Reads base.yaml's two levels (`section:` / `  key: value`, comments above keys). It
/// refuses any other shape, so a new form of entry cannot slip past the reference.
fn parse(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut section: Option<String> = None;
    let mut comment: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.trim().is_empty() {
            comment.clear();
        } else if line.starts_with('#') {
            // The file's own header, before the first section.
            assert!(
                section.is_none(),
                "base.yaml:{n}: a comment at column 0 inside a section"
            );
        } else if let Some(name) = line.strip_suffix(':').filter(|l| !l.starts_with(' ')) {
            section = Some(name.to_owned());
            comment.clear();
        } else if let Some(text) = line.strip_prefix("  # ") {
            comment.push(text.trim().to_owned());
        } else if let Some((key, value)) = line
            .strip_prefix("  ")
            .filter(|l| !l.starts_with(' '))
            .and_then(|l| l.split_once(':'))
        {
            let section = section
                .clone()
                .unwrap_or_else(|| panic!("base.yaml:{n}: a key outside any section"));
            assert!(
                !comment.is_empty(),
                "base.yaml:{n}: say what {section}.{key} means in a comment above it"
            );
            entries.push(Entry {
                section,
                key: key.to_owned(),
                value: value.trim().to_owned(),
                comment: comment.join(" "),
            });
            comment.clear();
        } else {
            panic!("base.yaml:{n}: docs_reference cannot read {line:?}; extend its parser");
        }
    }
    entries
}

/// The field names a settings struct accepts, from the "unknown field" error its
/// `deny_unknown_fields` gives for a key it cannot have (`path` empty: the sections).
fn accepted(path: &str) -> BTreeSet<String> {
    let var = format!("FLEXCORE__{path}ZZ_NOT_A_KEY");
    let vars: HashMap<String, String> = [(var, "1".to_owned())].into_iter().collect();
    let error = Settings::load_with(None, None, Some(vars))
        .expect_err("an unknown key must be refused")
        .to_string();
    let list = error
        .split_once("expected one of ")
        .or_else(|| error.split_once("expected "))
        .unwrap_or_else(|| panic!("unexpected error for an unknown key: {error}"))
        .1;
    // The config crate may name the section after the list: "… for key `admin`".
    let list = list.split(" for key ").next().unwrap_or(list);
    list.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

fn table(entries: &[Entry]) -> String {
    let mut out = String::from("| Key | Default | Environment variable | Meaning |\n|---|---|---|---|\n");
    for e in entries {
        let var = format!("FLEXCORE__{}__{}", e.section.to_uppercase(), e.key.to_uppercase());
        out.push_str(&format!(
            "| `{}.{}` | `{}` | `{var}` | {} |\n",
            e.section,
            e.key,
            e.value,
            e.comment.replace('|', "\\|").replace('<', "&lt;").replace('>', "&gt;")
        ));
    }
    out
}

#[test]
fn config_reference_up_to_date() {
    let base = std::fs::read_to_string(root().join("config/base.yaml")).unwrap();
    let entries = parse(&base);

    // Every key the settings accept is documented in base.yaml, and nothing else is.
    let sections: BTreeSet<String> = entries.iter().map(|e| e.section.clone()).collect();
    assert_eq!(sections, accepted(""), "base.yaml and the Settings sections differ");
    for section in &sections {
        let keys: BTreeSet<String> = entries
            .iter()
            .filter(|e| &e.section == section)
            .map(|e| e.key.clone())
            .collect();
        let prefix = format!("{}__", section.to_uppercase());
        assert_eq!(keys, accepted(&prefix), "base.yaml and the {section} settings differ");
    }

    let path = root().join(DOC);
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {DOC}: {e}"));
    let start = doc
        .find(BEGIN)
        .unwrap_or_else(|| panic!("{DOC} lacks the line {BEGIN}"))
        + BEGIN.len();
    let end = doc.find(END).unwrap_or_else(|| panic!("{DOC} lacks the line {END}"));
    let generated = format!("\n\n{}\n", table(&entries));
    if doc[start..end] == generated {
        return;
    }
    if std::env::var("FLEXCORE_UPDATE_DOCS").is_ok_and(|v| v == "1") {
        let updated = format!("{}{generated}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, updated).unwrap_or_else(|e| panic!("write {DOC}: {e}"));
        return;
    }
    panic!(
        "the configuration reference in {DOC} differs from config/base.yaml\n\
         run: FLEXCORE_UPDATE_DOCS=1 cargo test -p flexcore-config --test docs_reference"
    );
}
