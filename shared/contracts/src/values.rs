//! Value types that cannot hold an invalid value: they parse on deserialisation, so a
//! command that decodes is already well-formed (parse, don't validate).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a value failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
}

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
    ($(#[$doc:meta])* $name:ident, $parse:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
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
    };
}

string_value!(
    /// A plugin name: 1-64 characters of `a-z 0-9 - _`.
    PluginName,
    |s| parse_name("plugin name", s, 64)
);

string_value!(
    /// A pipeline name, unique among non-archived pipelines: 1-128 characters of `a-z 0-9 - _`.
    PipelineName,
    |s| parse_name("pipeline name", s, 128)
);

string_value!(
    /// A semantic version (`1.2.3`, `1.0.0-beta.1`).
    PluginVersion,
    parse_semver
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
    }
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
    }
);

string_value!(
    /// A free-text label (owner, tag, runner id): 1-200 printable characters.
    Label,
    |s| {
        if s.trim().is_empty() || s.len() > 200 || s.chars().any(char::is_control) {
            Err(ValueError(format!("{s:?} is invalid: expected 1-200 printable characters")))
        } else {
            Ok(())
        }
    }
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

/// Strict semver 2.0 check (major.minor.patch with optional pre-release and build).
fn parse_semver(s: &str) -> Result<(), ValueError> {
    let err = || ValueError(format!("version {s:?} is not a semantic version like 1.2.3"));
    let core = s.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    let numeric =
        |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) && (p.len() == 1 || !p.starts_with('0'));
    if parts.len() != 3 || !parts.iter().all(numeric) || s.len() > 64 {
        return Err(err());
    }
    let rest = &s[core.len()..];
    if !rest
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '+')
        || rest == "-"
        || rest == "+"
    {
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
