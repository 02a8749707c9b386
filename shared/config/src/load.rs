//! Finding the config directory and merging the layers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::sync::OnceLock;

use config::{Config, ConfigError, Environment, File, FileFormat};

use crate::Settings;

/// `config/base.yaml` as this build was made with: the first layer of every load (so a key
/// a deployed `base.yaml` leaves out keeps its default) and the `Default` of every section.
pub const BASE_YAML: &str = include_str!("../../../config/base.yaml");

/// The built-in `base.yaml`, parsed once.
pub(crate) fn built_in() -> &'static Settings {
    static BUILT_IN: OnceLock<Settings> = OnceLock::new();
    BUILT_IN.get_or_init(|| {
        Config::builder()
            .add_source(File::from_str(BASE_YAML, FileFormat::Yaml))
            .build()
            .and_then(Config::try_deserialize)
            .unwrap_or_else(|e| invalid_built_in(&e))
    })
}

/// `tests/it/layers.rs` loads the built-in file, so a build whose `base.yaml` does not
/// parse fails its tests; this never runs in a tested build.
#[allow(clippy::panic)]
fn invalid_built_in(error: &ConfigError) -> ! {
    panic!("the built-in config/base.yaml does not load: {error}")
}

/// Variable naming the environment file to layer on top of `base.yaml`.
pub const ENV_VAR: &str = "FLEXCORE_ENV";
/// Variable naming the config directory explicitly.
pub const CONFIG_DIR_VAR: &str = "FLEXCORE_CONFIG_DIR";
/// Prefix of override variables: `FLEXCORE__SECTION__KEY`.
pub const VAR_PREFIX: &str = "FLEXCORE";
/// Separator between prefix, section and key in override variables.
pub const VAR_SEPARATOR: &str = "__";

impl Settings {
    /// Loads the settings the way every binary does.
    ///
    /// The directory is `$FLEXCORE_CONFIG_DIR` if set (its `base.yaml` must exist),
    /// else the nearest `config/` holding a `base.yaml` found from the current
    /// directory upwards (so binaries and tests work from any subdirectory of the
    /// repository), else none: the built-in `base.yaml` ([`BASE_YAML`]) alone.
    /// `$FLEXCORE_ENV` names the optional environment file; `FLEXCORE__…` variables
    /// override both.
    pub fn load() -> Result<Self, ConfigError> {
        let env = std::env::var(ENV_VAR).ok().filter(|e| !e.is_empty());
        let dir = match std::env::var_os(CONFIG_DIR_VAR).filter(|d| !d.is_empty()) {
            Some(dir) => Some(PathBuf::from(dir)),
            None => std::env::current_dir().ok().and_then(|cwd| find_config_dir(&cwd)),
        };
        Self::load_with(dir.as_deref(), env.as_deref(), None)
    }

    /// Loads `dir/base.yaml` (required), then `dir/<env>.yaml` if `env` is given and
    /// the file exists, then the process's `FLEXCORE__…` variables.
    pub fn load_from(dir: &Path, env: Option<&str>) -> Result<Self, ConfigError> {
        Self::load_with(Some(dir), env, None)
    }

    /// The general form of [`Settings::load_from`]: the built-in `base.yaml` first, then
    /// the files (none with `dir` `None`), and with `vars` `Some` the override variables are
    /// read from that map instead of the process environment (tests use this so they
    /// do not race on the process-wide environment).
    pub fn load_with(
        dir: Option<&Path>,
        env: Option<&str>,
        vars: Option<HashMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let mut builder = Config::builder().add_source(File::from_str(BASE_YAML, FileFormat::Yaml));
        if let Some(dir) = dir {
            builder = builder.add_source(File::from(dir.join("base.yaml")).required(true));
            if let Some(env) = env {
                check_env_name(env)?;
                builder = builder.add_source(File::from(dir.join(format!("{env}.yaml"))).required(false));
            }
        }
        builder
            .add_source(
                Environment::with_prefix(VAR_PREFIX)
                    .separator(VAR_SEPARATOR)
                    .ignore_empty(true)
                    .source(vars),
            )
            .build()?
            .try_deserialize()
    }
}

/// The nearest `config/` directory containing a `base.yaml`, searching `start` and
/// its ancestors.
pub fn find_config_dir(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join("config"))
        .find(|dir| dir.join("base.yaml").is_file())
}

/// The environment name becomes a file name: keep it to one plain path segment.
fn check_env_name(env: &str) -> Result<(), ConfigError> {
    let plain = !env.is_empty() && env.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if plain {
        Ok(())
    } else {
        Err(ConfigError::Message(format!(
            "invalid {ENV_VAR} {env:?}: use letters, digits, '-' and '_'"
        )))
    }
}
