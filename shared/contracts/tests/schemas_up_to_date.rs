//! Fails when `schemas/` no longer matches the Rust types. Regenerate with
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `FLEXCORE_UPDATE_SCHEMAS=1 cargo test -p flexcore-contracts --test schemas_up_to_date`.

use std::path::PathBuf;

#[test]
fn schemas_up_to_date() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let update = std::env::var("FLEXCORE_UPDATE_SCHEMAS").is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    let generated = flexcore_contracts::schema::all();
    for (path, text) in &generated {
        let file = root.join(path);
        let current = std::fs::read_to_string(&file).unwrap_or_default();
        if current != *text {
            if update {
                std::fs::create_dir_all(file.parent().unwrap_or(&root)).unwrap_or_else(|e| panic!("mkdir: {e}"));
                std::fs::write(&file, text).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
            } else {
                stale.push(path.clone());
            }
        }
    }
    // A schema file whose type is gone is drift too.
    for dir in ["commands", "events", "replies", "queries", "views", "work"] {
        for entry in std::fs::read_dir(root.join(dir)).into_iter().flatten().flatten() {
            let rel = format!("{dir}/{}", entry.file_name().to_string_lossy());
            if !generated.iter().any(|(p, _)| *p == rel) {
                if update {
                    std::fs::remove_file(entry.path()).unwrap_or_else(|e| panic!("remove {rel}: {e}"));
                } else {
                    stale.push(rel);
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "schemas/ drifted from the types: {stale:?}\nrun: FLEXCORE_UPDATE_SCHEMAS=1 cargo test -p flexcore-contracts --test schemas_up_to_date"
    );
}
