//! Singer invocation: `plugin --config C [--state S] [--catalog K | --properties K] [--discover]`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::PluginError;

/// The command-line arguments of a Singer plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// `--config PATH`: the plugin's JSON config.
    pub config: Option<PathBuf>,
    /// `--state PATH`: the last STATE value the engine stored, if any.
    pub state: Option<PathBuf>,
    /// `--catalog PATH` (or the legacy `--properties PATH`).
    pub catalog: Option<PathBuf>,
    /// `--discover`: print a catalog instead of syncing.
    pub discover: bool,
}

/// A command line the plugin cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsError {
    /// A flag that takes a path came last.
    #[error("missing value for {0}")]
    MissingValue(String),
    /// A flag or value this SDK does not know.
    #[error("unknown argument {0:?}")]
    Unknown(String),
}

impl Args {
    /// Parses the process arguments (without the program name).
    pub fn from_env() -> Result<Args, ArgsError> {
        Args::parse(std::env::args_os().skip(1))
    }

    /// Parses `args` (without the program name). Accepts `--flag PATH` and `--flag=PATH`.
    pub fn parse<I, S>(args: I) -> Result<Args, ArgsError>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut parsed = Args::default();
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            let text = arg.to_string_lossy();
            let (flag, inline) = match text.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(PathBuf::from(value))),
                _ => (text.into_owned(), None),
            };
            let slot = match flag.as_str() {
                "--discover" if inline.is_none() => {
                    parsed.discover = true;
                    continue;
                }
                "--config" => &mut parsed.config,
                "--state" => &mut parsed.state,
                "--catalog" | "--properties" => &mut parsed.catalog,
                _ => return Err(ArgsError::Unknown(arg.to_string_lossy().into_owned())),
            };
            let value = match inline {
                Some(value) => value,
                // Take the following argument raw so non-UTF-8 paths survive.
                None => args.next().map(PathBuf::from).ok_or(ArgsError::MissingValue(flag))?,
            };
            *slot = Some(value);
        }
        Ok(parsed)
    }

    /// Reads and deserialises the `--config` file.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        let path = self
            .config
            .as_deref()
            .ok_or_else(|| PluginError::Config("no --config file given".into()))?;
        let text = read(path, "config")?;
        serde_json::from_str(&text)
            .map_err(|e| PluginError::Config(format!("config file {} is invalid: {e}", path.display())))
    }

    /// The `--config` file as raw JSON (`{}` when no config was given).
    pub fn config_value(&self) -> Result<Value, PluginError> {
        match &self.config {
            None => Ok(Value::Object(Default::default())),
            Some(_) => self.config(),
        }
    }

    /// The `--state` value. `None` without `--state` or when the file is empty; an
    /// unreadable or invalid state file is an error rather than a silent full refresh.
    pub fn state(&self) -> Result<Option<Value>, PluginError> {
        read_optional_json(self.state.as_deref(), "state")
    }

    /// The `--catalog` (or `--properties`) value, if given.
    pub fn catalog(&self) -> Result<Option<Value>, PluginError> {
        read_optional_json(self.catalog.as_deref(), "catalog")
    }
}

fn read(path: &Path, what: &str) -> Result<String, PluginError> {
    std::fs::read_to_string(path)
        .map_err(|e| PluginError::Config(format!("cannot read {what} file {}: {e}", path.display())))
}

fn read_optional_json(path: Option<&Path>, what: &str) -> Result<Option<Value>, PluginError> {
    let Some(path) = path else { return Ok(None) };
    let text = read(path, what)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| PluginError::Config(format!("{what} file {} is invalid: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_all_flags() {
        let args = Args::parse([
            "--config",
            "c.json",
            "--state=s.json",
            "--properties",
            "p.json",
            "--discover",
        ])
        .unwrap();
        assert_eq!(args.config, Some(PathBuf::from("c.json")));
        assert_eq!(args.state, Some(PathBuf::from("s.json")));
        assert_eq!(args.catalog, Some(PathBuf::from("p.json")));
        assert!(args.discover);
        let args = Args::parse(["--catalog", "k.json"]).unwrap();
        assert_eq!(args.catalog, Some(PathBuf::from("k.json")));
        assert!(!args.discover);
    }

    #[test]
    fn rejects_bad_command_lines() {
        assert_eq!(
            Args::parse(["--config"]),
            Err(ArgsError::MissingValue("--config".into()))
        );
        assert_eq!(Args::parse(["--verbose"]), Err(ArgsError::Unknown("--verbose".into())));
        assert_eq!(
            Args::parse(["--discover=yes"]),
            Err(ArgsError::Unknown("--discover=yes".into()))
        );
    }

    #[test]
    fn reads_config_and_state() {
        #[derive(Debug, serde::Deserialize)]
        struct Config {
            name: String,
        }
        let dir = std::env::temp_dir().join(format!("flexcore-sdk-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.json");
        let state = dir.join("state.json");
        std::fs::write(&config, r#"{"name":"x"}"#).unwrap();
        std::fs::write(&state, r#"{"bookmarks":{}}"#).unwrap();
        let args = Args {
            config: Some(config.clone()),
            state: Some(state.clone()),
            ..Args::default()
        };
        assert_eq!(args.config::<Config>().unwrap().name, "x");
        assert_eq!(args.state().unwrap(), Some(json!({"bookmarks": {}})));

        std::fs::write(&state, "  \n").unwrap();
        assert_eq!(args.state().unwrap(), None);
        std::fs::write(&state, "{").unwrap();
        assert!(args.state().unwrap_err().to_string().contains("state file"));
        std::fs::write(&config, r#"{"other":1}"#).unwrap();
        let e = args.config::<Config>().unwrap_err().to_string();
        assert!(e.contains("is invalid") && e.contains("missing field `name`"), "{e}");

        let none = Args::default();
        assert_eq!(
            none.config::<Config>().unwrap_err().to_string(),
            "no --config file given"
        );
        assert_eq!(none.state().unwrap(), None);
        let gone = Args {
            config: Some(dir.join("nope.json")),
            ..Args::default()
        };
        assert!(gone
            .config::<Config>()
            .unwrap_err()
            .to_string()
            .contains("cannot read config file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
