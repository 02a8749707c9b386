//! Code examples in `docs/*.md` that follow a `<!-- snippet: <path> -->` line must appear
//! verbatim in that file, which the workspace build compiles and tests: an example cannot
//! silently drift from code that builds. Fix a failure by copying the current code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};

const MARKER: &str = "<!-- snippet: ";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `(source path, code)` of every marked code block of `doc`.
fn snippets(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(path) = line.strip_prefix(MARKER).and_then(|l| l.strip_suffix(" -->")) else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert!(
            fence.starts_with("```"),
            "a snippet marker for {path} must be followed by a code fence"
        );
        let code: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
        out.push((path.to_owned(), code.join("\n")));
    }
    out
}

#[test]
fn doc_snippets_match_their_sources() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("docs")).unwrap().flatten() {
        let doc_path = entry.path();
        if doc_path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let doc = std::fs::read_to_string(&doc_path).unwrap();
        for (path, code) in snippets(&doc) {
            let source = std::fs::read_to_string(root().join(&path))
                .unwrap_or_else(|e| panic!("{}: snippet source {path}: {e}", doc_path.display()));
            assert!(
                source.contains(&code),
                "{}: the example marked `{path}` no longer appears in {path}; copy the current code",
                doc_path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no marked snippets found in docs/");
}
