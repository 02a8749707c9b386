//! Which host environment variables a plugin's `env` grants may pass through: only those
//! the operator put on `runner.plugin_env_allow`. A grant is recorded by whoever registers
//! the plugin; the allow-list is the runner host's own decision, so registering a plugin
//! never reaches the runner's other secrets, its database URL or its NATS credentials.
//! Names of the runner's own configuration (`FLEXCORE_…`) and the secret variables
//! (`runner.secrets_env_prefix`) cannot be allowed at all.

use crate::executor::is_runner_setting;

/// The operator's allow-list: exact names and `PREFIX*` patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvAllowList {
    exact: Vec<String>,
    prefixes: Vec<String>,
    /// Prefix of the secret variables (`${secret:…}` from `env`), never allowed.
    secrets_prefix: Option<String>,
}

impl EnvAllowList {
    /// Parses `entries` (`NAME` or `PREFIX*`, names as in a shell: letters, digits, `_`).
    /// Refuses an entry that could cover a runner setting or a secret variable
    /// (`secrets_prefix`, when secrets come from the environment).
    pub fn new(entries: &[String], secrets_prefix: Option<&str>) -> Result<Self, String> {
        let secrets_prefix = secrets_prefix.filter(|p| !p.is_empty()).map(str::to_owned);
        let mut list = Self {
            secrets_prefix: secrets_prefix.clone(),
            ..Self::default()
        };
        for entry in entries {
            let (name, is_prefix) = match entry.strip_suffix('*') {
                Some(prefix) => (prefix, true),
                None => (entry.as_str(), false),
            };
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "runner.plugin_env_allow: {entry:?} is not a variable name or NAME_PREFIX* (letters, digits and '_', not starting with a digit)"
                ));
            }
            let upper = name.to_ascii_uppercase();
            let covers = |protected: &str| upper.starts_with(protected) || (is_prefix && protected.starts_with(&upper));
            if covers("FLEXCORE_") || is_runner_setting(name) {
                return Err(format!(
                    "runner.plugin_env_allow: {entry:?} would pass the runner's own configuration (FLEXCORE_…) to plugins; it is never allowed"
                ));
            }
            if let Some(secret) = &secrets_prefix {
                if covers(&secret.to_ascii_uppercase()) {
                    return Err(format!(
                        "runner.plugin_env_allow: {entry:?} would pass secret variables ({secret}…) to plugins; reference them as ${{secret:NAME}} in a step config instead"
                    ));
                }
            }
            if is_prefix {
                list.prefixes.push(name.to_owned());
            } else {
                list.exact.push(name.to_owned());
            }
        }
        Ok(list)
    }

    /// Whether a plugin may be granted `name`.
    pub fn allows(&self, name: &str) -> bool {
        let upper = name.to_ascii_uppercase();
        let protected = is_runner_setting(name)
            || self
                .secrets_prefix
                .as_ref()
                .is_some_and(|p| upper.starts_with(&p.to_ascii_uppercase()));
        !protected
            && (self.exact.iter().any(|e| e == name) || self.prefixes.iter().any(|p| name.starts_with(p.as_str())))
    }

    /// The first of `grants` not allowed, if any.
    pub fn refused<'a>(&self, grants: &'a [String]) -> Option<&'a str> {
        grants.iter().map(String::as_str).find(|g| !self.allows(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Result<EnvAllowList, String> {
        let entries: Vec<String> = entries.iter().map(|e| (*e).to_owned()).collect();
        EnvAllowList::new(&entries, Some("APP_SECRET_"))
    }

    #[test]
    fn only_listed_names_and_prefixes_are_allowed() {
        let allow = list(&["TZ", "LANG", "PGSSL*"]).unwrap();
        assert!(allow.allows("TZ") && allow.allows("PGSSLMODE"));
        assert!(!allow.allows("PATH") && !allow.allows("tz"));
        assert_eq!(allow.refused(&["TZ".into(), "HOME".into()]), Some("HOME"));
        assert_eq!(allow.refused(&["LANG".into()]), None);
        assert!(!EnvAllowList::default().allows("TZ"), "nothing by default");
    }

    #[test]
    fn the_runners_configuration_and_secrets_can_never_be_allowed() {
        for entry in [
            "FLEXCORE__DATABASE__URL",
            "FLEXCORE__NATS__PASSWORD",
            "flexcore_secret_X",
            "FLEX*",
            "F*",
            "*",
            "APP_SECRET_DB",
            "APP_*",
        ] {
            assert!(list(&[entry]).is_err(), "{entry} must be refused");
        }
        assert!(list(&["NOT-A-NAME"]).is_err());
        assert!(list(&["APPLE", "FLEXIBLE"]).is_ok());
    }
}
