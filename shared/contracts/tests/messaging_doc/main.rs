//! Generates `docs/messaging.md` from the contract types (their JSON Schemas, whose
//! descriptions are the types' doc comments), the subject builders, the header constants
//! and the error codes, plus a few facts read from the services' source (see `scan`).
//! Fails when the committed file differs. Regenerate with
//! `FLEXCORE_UPDATE_DOCS=1 cargo test -p flexcore-contracts --test messaging_doc`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod doc;
mod prose;
mod render;
mod scan;

/// Where the document lives, relative to the repository root.
const PATH: &str = "docs/messaging.md";

#[test]
fn messaging_doc_up_to_date() {
    let generated = doc::generate();
    let path = scan::root().join(PATH);
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current == generated {
        return;
    }
    if std::env::var("FLEXCORE_UPDATE_DOCS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        return;
    }
    let line = current
        .lines()
        .zip(generated.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| current.lines().count().min(generated.lines().count()))
        + 1;
    panic!(
        "{PATH} drifted from the contract types (first difference at line {line})\n\
         run: FLEXCORE_UPDATE_DOCS=1 cargo test -p flexcore-contracts --test messaging_doc"
    );
}
