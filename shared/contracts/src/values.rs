//! Value types that cannot hold an invalid value: they parse on deserialisation, so a
//! command that decodes is already well-formed (parse, don't validate).

use std::fmt;

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::rules;

/// Why a value failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
}

/// Checks a name; the same rule as [`rules::PLUGIN_NAME_PATTERN`] / [`rules::PIPELINE_NAME_PATTERN`].
fn parse_name(kind: &str, s: &str, max: usize) -> Result<(), ValueError> {
    let first_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if s.is_empty() || s.len() > max || !first_ok || !s.chars().all(is_name_char) {
        return Err(ValueError(format!(
            "{kind} {s:?} is invalid: use 1-{max} characters of a-z, 0-9, '-' and '_', starting with a letter or digit"
        )));
    }
    Ok(())
}

macro_rules! string_value {
    ($(#[$doc:meta])* $name:ident, $parse:expr, $schema:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;
            fn try_from(s: String) -> Result<Self, ValueError> {
                let parse: fn(&str) -> Result<(), ValueError> = $parse;
                parse(&s)?;
                Ok(Self(s))
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValueError;
            fn from_str(s: &str) -> Result<Self, ValueError> {
                Self::try_from(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let (description, pattern, max): (&str, String, u64) = $schema;
                let mut schema = json_schema!({
                    "description": description,
                    "type": "string",
                    "minLength": 1,
                    "maxLength": max,
                });
                schema.insert("pattern".into(), pattern.into());
                schema
            }
        }
    };
}

string_value!(
    /// A plugin name: 1-64 characters of `a-z 0-9 - _`.
    PluginName,
    |s| parse_name("plugin name", s, 64),
    (
        "A plugin name: 1-64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit.",
        rules::PLUGIN_NAME_PATTERN.to_owned(),
        64
    )
);

string_value!(
    /// A pipeline name, unique among non-archived pipelines: 1-128 characters of `a-z 0-9 - _`.
    PipelineName,
    |s| parse_name("pipeline name", s, 128),
    (
        "A pipeline name: 1-128 characters of a-z, 0-9, '-' and '_', starting with a letter or digit.",
        rules::PIPELINE_NAME_PATTERN.to_owned(),
        128
    )
);

string_value!(
    /// A semantic version (`1.2.3`, `1.0.0-beta.1`).
    PluginVersion,
    parse_semver,
    (
        "A semantic version 2.0 (1.2.3, 1.0.0-beta.1+build.5), at most 64 characters.",
        rules::VERSION_PATTERN.to_owned(),
        rules::MAX_VERSION_CHARS
    )
);

string_value!(
    /// A module digest: `sha256:` followed by 64 lowercase hex digits.
    Digest,
    |s| {
        let hex = s.strip_prefix("sha256:").unwrap_or("");
        if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
            Ok(())
        } else {
            Err(ValueError(format!("digest {s:?} is invalid: expected \"sha256:\" and 64 lowercase hex digits")))
        }
    },
    (
        "A module digest: sha256: followed by 64 lowercase hex digits.",
        rules::DIGEST_PATTERN.to_owned(),
        71
    )
);

string_value!(
    /// A reference to a plugin version: `name@version`.
    PluginRef,
    |s| {
        let (name, version) = s
            .split_once('@')
            .ok_or_else(|| ValueError(format!("plugin reference {s:?} is invalid: expected name@version")))?;
        parse_name("plugin name", name, 64)?;
        parse_semver(version)
    },
    (
        "A plugin version reference: name@version, e.g. csv@1.0.0.",
        rules::PLUGIN_REF_PATTERN.to_owned(),
        rules::MAX_PLUGIN_REF_CHARS
    )
);

string_value!(
    /// A free-text label (owner, tag, runner id): 1-200 printable characters, not all blank.
    Label,
    |s| {
        let printable = !s.chars().any(rules::is_control);
        let length = s.chars().count() as u64;
        if !printable || length > rules::MAX_LABEL_CHARS || s.chars().all(rules::is_blank) {
            Err(ValueError(format!(
                "{:?} is invalid: expected 1-200 printable characters, not all blank",
                s.chars().take(40).collect::<String>()
            )))
        } else {
            Ok(())
        }
    },
    (
        "A free-text label (owner, tag, runner id, reason): 1-200 printable characters, not all blank.",
        rules::label_pattern(),
        rules::MAX_LABEL_CHARS
    )
);

impl PluginRef {
    /// The plugin name part.
    pub fn name(&self) -> &str {
        self.0.split_once('@').map_or("", |(n, _)| n)
    }

    /// The version part.
    pub fn version(&self) -> &str {
        self.0.split_once('@').map_or("", |(_, v)| v)
    }

    /// The plugin id this reference addresses.
    pub fn plugin_id(&self) -> uuid::Uuid {
        crate::ids::plugin_id(self.name(), self.version())
    }
}

/// Strict semver 2.0 check (major.minor.patch with optional pre-release and build), the
/// grammar of [`rules::VERSION_PATTERN`].
fn parse_semver(s: &str) -> Result<(), ValueError> {
    let err = || ValueError(format!("version {s:?} is not a semantic version like 1.2.3"));
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '-';
    let numeric = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    let no_leading_zero = |p: &str| p.len() == 1 || !p.starts_with('0');
    if s.len() > rules::MAX_VERSION_CHARS as usize {
        return Err(err());
    }
    let (rest, build) = match s.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (s, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() != 3 || !parts.iter().all(|p| numeric(p) && no_leading_zero(p)) {
        return Err(err());
    }
    let identifiers_ok = |text: &str, numbers_strict: bool| {
        text.split('.').all(|id| {
            !id.is_empty() && id.chars().all(ident_char) && (!numbers_strict || !numeric(id) || no_leading_zero(id))
        })
    };
    if pre.is_some_and(|p| !identifiers_ok(p, true)) || build.is_some_and(|b| !identifiers_ok(b, false)) {
        return Err(err());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert!("csv-extractor".parse::<PluginName>().is_ok());
        assert!("".parse::<PluginName>().is_err());
        assert!("Has Space".parse::<PipelineName>().is_err());
        assert!("-lead".parse::<PipelineName>().is_err());
    }

    #[test]
    fn versions_and_refs_parse() {
        assert!("1.2.3".parse::<PluginVersion>().is_ok());
        assert!("1.2.3-beta.1+build".parse::<PluginVersion>().is_ok());
        assert!("1.2".parse::<PluginVersion>().is_err());
        assert!("01.2.3".parse::<PluginVersion>().is_err());
        let r: PluginRef = "csv@1.0.0".parse().unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!((r.name(), r.version()), ("csv", "1.0.0"));
        assert!("csv".parse::<PluginRef>().is_err());
    }

    #[test]
    fn digests_parse() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert!(ok.parse::<Digest>().is_ok());
        assert!("sha256:xyz".parse::<Digest>().is_err());
        assert!(format!("md5:{}", "a".repeat(64)).parse::<Digest>().is_err());
    }

    #[test]
    fn deserialising_rejects_bad_values() {
        let r: Result<PipelineName, _> = serde_json::from_str("\"\"");
        assert!(r.is_err());
    }
}
