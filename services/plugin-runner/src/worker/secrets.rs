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

/// Replaces every `${secret:NAME}` in string values of `config`; returns the resolved
/// values so logs can be scrubbed of them.
pub fn resolve(config: &Value, source: &SecretSource) -> Result<(Value, Vec<String>), MissingSecret> {
    let mut revealed = Vec::new();
    let resolved = walk(config, source, &mut revealed)?;
    Ok((resolved, revealed))
}

fn walk(value: &Value, source: &SecretSource, revealed: &mut Vec<String>) -> Result<Value, MissingSecret> {
    Ok(match value {
        Value::String(s) => Value::String(substitute(s, source, revealed)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| walk(v, source, revealed))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), walk(v, source, revealed)?)))
                .collect::<Result<_, MissingSecret>>()?,
        ),
        other => other.clone(),
    })
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
        let config =
            serde_json::json!({"dsn": "postgres://u:${secret:DB_PASSWORD}@h/db", "list": ["${secret:DB_PASSWORD}", 3]});
        let (resolved, revealed) = resolve(&config, &source).unwrap();
        assert_eq!(resolved["dsn"], "postgres://u:hunter2@h/db");
        assert_eq!(resolved["list"][0], "hunter2");
        assert_eq!(
            scrub("connecting with hunter2", &revealed),
            "connecting with [redacted]"
        );
        let missing = resolve(&serde_json::json!({"x": "${secret:NOPE}"}), &source).unwrap_err();
        assert!(missing.to_string().contains("NOPE"));
    }
}
