//! Integration tests of `flexcore-config` (one test binary).

// Helpers outside `#[test]` functions fail the test just like the tests do.
#![allow(clippy::unwrap_used)]

mod layers;
mod validation;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The repository's `config/` directory.
fn repo_config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// An override-variable map, so tests never touch the process environment.
fn vars(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
    Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
}

/// A temporary config directory holding the given files.
fn config_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    dir
}
