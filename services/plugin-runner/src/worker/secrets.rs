//! `${secret:NAME}` references in step configs, resolved at run time from the configured
//! source and never written anywhere but the stage's private config file: the values
//! resolved go with the stage ([`Stage::secrets`](crate::executor::Stage)), and the
//! executor scrubs them from everything it reports.
//!
//! A reference is resolved only inside a string value; one in an object key (where a
//! name goes, e.g. a stream name a plugin could echo into counters) is refused.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::executor::map_json_strings;

/// Largest secret file read (a certificate chain fits; `/dev/zero` does not).
const MAX_SECRET_FILE_BYTES: u64 = 1 << 20;

/// Where secret values come from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// Environment variables `<prefix><NAME>` of the runner process.
    Env {
        /// Variable prefix, e.g. `FLEXCORE_SECRET_`.
        prefix: String,
    },
    /// Files under a directory: `<dir>/<NAME>`, or else, for a name with `__` in it,
    /// `<dir>/<A>/<B>` for `A__B` — one subdirectory per mounted Kubernetes Secret, Vault
    /// Agent or CSI secret volume, one file per key. Trailing newlines are trimmed.
    /// Read at every run, so a rotated secret is used from the next run on.
    Dir(PathBuf),
}

/// A reference that cannot be resolved. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The source has no such secret.
    #[error("secret {name:?} is not available from {source_desc}: define it there (the value is never logged)")]
    Missing {
        /// The secret's name.
        name: String,
        /// The source that was asked.
        source_desc: String,
    },
    /// A reference outside a string value.
    #[error("a secret reference is only allowed inside a string value, not in an object key (keys are names that plugins report, e.g. as stream names); move it into a value")]
    InKey,
}

impl SecretSource {
    fn lookup(&self, name: &str) -> Result<String, SecretError> {
        let missing = |source_desc: String| SecretError::Missing {
            name: name.to_owned(),
            source_desc,
        };
        match self {
            Self::Env { prefix } => {
                let var = format!("{prefix}{name}");
                std::env::var(&var).map_err(|_| missing(format!("environment variable {var}")))
            }
            Self::Dir(dir) => {
                let flat = dir.join(name);
                let mut tried = vec![flat.display().to_string()];
                if let Some(value) = read_secret_file(&flat) {
                    return Ok(value);
                }
                if name.contains("__") {
                    let nested: PathBuf = name.split("__").collect();
                    let path = dir.join(nested);
                    if let Some(value) = read_secret_file(&path) {
                        return Ok(value);
                    }
                    tried.push(path.display().to_string());
                }
                Err(missing(format!("file {}", tried.join(" or "))))
            }
        }
    }
}

/// A regular file's text (following symlinks: Kubernetes mounts keys as links into
/// `..data/`), without trailing newlines; `None` if there is none or it is too large.
fn read_secret_file(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_SECRET_FILE_BYTES {
        return None;
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_SECRET_FILE_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    Some(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// Replaces every `${secret:NAME}` in the string values of `config` (a JSON text);
/// returns the resolved text and the resolved values, so the execution can scrub them.
/// Everything else in the text (numbers, key order, spacing, escapes) stays as written.
pub fn resolve(config: &str, source: &SecretSource) -> Result<(String, Vec<String>), SecretError> {
    let mut revealed = Vec::new();
    let resolved = map_json_strings(config, |text, is_key| {
        if !text.contains("${secret:") {
            return Ok(None);
        }
        if is_key {
            return Err(SecretError::InKey);
        }
        substitute(text, source, &mut revealed).map(Some)
    })?;
    Ok((resolved, revealed))
}

fn substitute(s: &str, source: &SecretSource, revealed: &mut Vec<String>) -> Result<String, SecretError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_from_a_directory_in_string_values_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("DB_PASSWORD"), "hunter2\n").unwrap();
        let source = SecretSource::Dir(dir.path().to_owned());
        let config = r#"{"z": 1.10, "dsn":"postgres://u:${secret:DB_PASSWORD}@h/db","list":["\u0024{secret:DB_PASSWORD}", 3, "a\"${x}"],"big":123456789012345678901234567890}"#;
        let (resolved, revealed) = resolve(config, &source).unwrap();
        assert_eq!(
            resolved,
            r#"{"z": 1.10, "dsn":"postgres://u:hunter2@h/db","list":["hunter2", 3, "a\"${x}"],"big":123456789012345678901234567890}"#
        );
        assert_eq!(revealed, ["hunter2", "hunter2"]);
        let missing = resolve(r#"{"x": "${secret:NOPE}"}"#, &source).unwrap_err();
        assert!(missing.to_string().contains("NOPE"));
        let in_key = resolve(r#"{"streams": {"${secret:DB_PASSWORD}" : 1}}"#, &source).unwrap_err();
        assert!(matches!(in_key, SecretError::InKey), "{in_key}");
    }

    #[test]
    fn a_secret_manager_layout_one_directory_per_secret_group() {
        let dir = tempfile::tempdir().unwrap();
        // As Kubernetes mounts a Secret: keys are symlinks into a `..data` directory.
        let data = dir.path().join("db/..data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("password"), "p@ss\r\n").unwrap();
        std::os::unix::fs::symlink("..data/password", dir.path().join("db/password")).unwrap();
        std::fs::write(dir.path().join("TOKEN"), "multi\nline\n").unwrap();
        let source = SecretSource::Dir(dir.path().to_owned());
        let (resolved, _) = resolve(r#"{"pw": "${secret:db__password}", "t": "${secret:TOKEN}"}"#, &source).unwrap();
        assert_eq!(resolved, r#"{"pw": "p@ss", "t": "multi\nline"}"#);
        let missing = resolve(r#"{"pw": "${secret:db__user}"}"#, &source).unwrap_err();
        assert!(missing.to_string().contains("db/user"), "{missing}");
        // A directory or a device is no secret file.
        let not_file = resolve(r#"{"pw": "${secret:db}"}"#, &source).unwrap_err();
        assert!(matches!(not_file, SecretError::Missing { .. }));
    }
}
