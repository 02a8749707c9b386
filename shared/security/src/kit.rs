//! A set of identities generated together: one NKey per identity, the identities file,
//! and the nats-server `accounts` block that lets each log in with its role's
//! permissions. `flexctl security init`, `flexctl dev` and the test stacks use it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use nkeys::KeyPair;

use crate::{permissions, Role, Trust, TrustedIdentity};

/// Name of the account every FlexCore identity belongs to.
pub const ACCOUNT: &str = "FLEXCORE";
/// File name of the identities file in a kit directory.
pub const IDENTITIES_FILE: &str = "identities.json";
/// File name of the nats-server accounts block in a kit directory.
pub const ACCOUNTS_FILE: &str = "nats-accounts.conf";

/// Generated identities with their seeds.
#[derive(Clone)]
pub struct Kit {
    members: Vec<Member>,
}

#[derive(Clone)]
struct Member {
    identity: TrustedIdentity,
    seed: String,
    /// Logs in to NATS without permission limits (test harnesses only).
    unrestricted: bool,
}

impl std::fmt::Debug for Kit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.members.iter().map(|m| &m.identity))
            .finish()
    }
}

/// The identities of a stack: one per service role, `flexctl` (admin), `app` (client),
/// `setup` (creates the streams) and `gateway` (the HTTP API).
pub const STANDARD: [(&str, Role); 8] = [
    ("command", Role::Command),
    ("projection", Role::Projection),
    ("scheduler", Role::Scheduler),
    ("runner", Role::Runner),
    ("flexctl", Role::Admin),
    ("app", Role::Client),
    ("setup", Role::Setup),
    ("gateway", Role::Gateway),
];

impl Kit {
    /// New keys for `identities` (name, role).
    pub fn generate(identities: &[(&str, Role)]) -> Self {
        let mut kit = Self { members: Vec::new() };
        for (name, role) in identities {
            kit.add(name, *role, false);
        }
        kit
    }

    /// Adds an identity with a new key; `unrestricted` logs in without NATS permission
    /// limits (for a test harness that must be able to forge; never in a deployment).
    pub fn add(&mut self, name: &str, role: Role, unrestricted: bool) {
        let key = KeyPair::new_user();
        self.members.push(Member {
            identity: TrustedIdentity {
                name: name.to_owned(),
                role,
                public_key: key.public_key(),
            },
            // A freshly generated key pair always has its seed.
            seed: key.seed().unwrap_or_default(),
            unrestricted,
        });
    }

    /// The identities (for the identities file).
    pub fn identities(&self) -> Vec<TrustedIdentity> {
        self.members.iter().map(|m| m.identity.clone()).collect()
    }

    /// The trust of these identities (an error if a name is invalid or repeated).
    pub fn trust(&self) -> Result<Trust, crate::SecurityError> {
        Trust::new(self.identities())
    }

    /// The seed of `name`.
    pub fn seed(&self, name: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.identity.name == name)
            .map(|m| m.seed.as_str())
    }

    /// The first identity with `role`.
    pub fn name_of(&self, role: Role) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.identity.role == role && !m.unrestricted)
            .map(|m| m.identity.name.as_str())
    }

    /// The nats-server `accounts` block of these identities ([`accounts_block`]).
    pub fn accounts_block(&self) -> String {
        let unrestricted: Vec<&str> = self
            .members
            .iter()
            .filter(|m| m.unrestricted)
            .map(|m| m.identity.public_key.as_str())
            .collect();
        accounts_block(&self.identities(), &unrestricted)
    }

    /// Writes the kit to `dir` (created 0700): [`IDENTITIES_FILE`], [`ACCOUNTS_FILE`] and
    /// `<name>.nk` per identity (its seed, mode 0600). Returns the seed files.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        set_mode(dir, 0o700)?;
        std::fs::write(dir.join(IDENTITIES_FILE), Trust::file_text(&self.identities()))?;
        std::fs::write(dir.join(ACCOUNTS_FILE), self.accounts_block())?;
        let mut seeds = Vec::new();
        for member in &self.members {
            let path = dir.join(format!("{}.nk", member.identity.name));
            write_private(&path, &format!("{}\n", member.seed))?;
            seeds.push(path);
        }
        Ok(seeds)
    }
}

/// Writes `text` to `path` readable by the owner only (0600), whatever the umask.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?
    };
    #[cfg(not(unix))]
    let mut file = std::fs::File::create(path)?;
    set_mode(path, 0o600)?;
    file.write_all(text.as_bytes())
}

/// The nats-server `accounts` block: account [`ACCOUNT`] with JetStream, one NKey user per
/// identity with its role's permissions (those in `unrestricted` without limits: test
/// harnesses only). Anonymous clients are refused (the server has no `no_auth_user`).
pub fn accounts_block(identities: &[TrustedIdentity], unrestricted: &[&str]) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# FlexCore identities and their permissions (generated by flexcore-security, e.g.\n\
         # `flexctl security accounts`; shared/security/src/permissions.rs says why each\n\
         # subject is there). Reload the server after a change: nats-server --signal reload.\n\
         accounts {{\n  {ACCOUNT} {{\n    jetstream: enabled\n    users: ["
    );
    for TrustedIdentity { name, role, public_key } in identities {
        let _ = writeln!(text, "      # {name} ({role})");
        if unrestricted.contains(&public_key.as_str()) {
            let _ = writeln!(text, "      {{ nkey: {public_key} }}");
        } else {
            let block = permissions::server_block(&permissions::in_deployment(*role, name, identities));
            let _ = writeln!(text, "      {{ nkey: {public_key}, {block} }}");
        }
    }
    text.push_str("    ]\n  }\n}\n");
    text
}

/// Adds identity `name` with `role` and a new key to the kit directory `dir` (identities
/// file, accounts block, `<name>.nk`); returns its seed file.
pub fn add_to_dir(dir: &Path, name: &str, role: Role) -> Result<PathBuf, crate::SecurityError> {
    let file = dir.join(IDENTITIES_FILE);
    let mut identities: Vec<TrustedIdentity> = Trust::load(&file)?.identities().cloned().collect();
    identities.sort_by(|a, b| a.name.cmp(&b.name));
    let key = KeyPair::new_user();
    identities.push(TrustedIdentity {
        name: name.to_owned(),
        role,
        public_key: key.public_key(),
    });
    // Checks the name is valid and new.
    Trust::new(identities.clone())?;
    let io = |e: std::io::Error| crate::SecurityError::Invalid(format!("{}: {e}", dir.display()));
    let seed_file = dir.join(format!("{name}.nk"));
    write_private(&seed_file, &format!("{}\n", key.seed().unwrap_or_default())).map_err(io)?;
    rewrite_dir(dir, &identities).map_err(io)?;
    Ok(seed_file)
}

/// Removes identity `name` from the kit directory `dir` (its seed file too).
pub fn remove_from_dir(dir: &Path, name: &str) -> Result<(), crate::SecurityError> {
    let file = dir.join(IDENTITIES_FILE);
    let mut identities: Vec<TrustedIdentity> = Trust::load(&file)?.identities().cloned().collect();
    let before = identities.len();
    identities.retain(|i| i.name != name);
    if identities.len() == before {
        return Err(crate::SecurityError::Invalid(format!(
            "no identity {name:?} in {}",
            file.display()
        )));
    }
    identities.sort_by(|a, b| a.name.cmp(&b.name));
    let io = |e: std::io::Error| crate::SecurityError::Invalid(format!("{}: {e}", dir.display()));
    rewrite_dir(dir, &identities).map_err(io)?;
    let _ = std::fs::remove_file(dir.join(format!("{name}.nk")));
    Ok(())
}

fn rewrite_dir(dir: &Path, identities: &[TrustedIdentity]) -> std::io::Result<()> {
    std::fs::write(dir.join(IDENTITIES_FILE), Trust::file_text(identities))?;
    std::fs::write(dir.join(ACCOUNTS_FILE), accounts_block(identities, &[]))
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    #[test]
    fn identities_are_added_and_removed_in_a_kit_directory() {
        let dir = tempfile::tempdir().unwrap();
        Kit::generate(&STANDARD).write(dir.path()).unwrap();
        let seed = add_to_dir(dir.path(), "runner-2", Role::Runner).unwrap();
        let trust = Trust::load(&dir.path().join(IDENTITIES_FILE)).unwrap();
        let identity = Identity::from_seed(&std::fs::read_to_string(seed).unwrap(), &trust).unwrap();
        assert_eq!((identity.name(), identity.role()), ("runner-2", Role::Runner));
        let accounts = std::fs::read_to_string(dir.path().join(ACCOUNTS_FILE)).unwrap();
        assert!(accounts.contains(identity.public_key()));
        assert!(
            add_to_dir(dir.path(), "runner-2", Role::Runner).is_err(),
            "a name twice"
        );
        remove_from_dir(dir.path(), "runner").unwrap();
        let trust = Trust::load(&dir.path().join(IDENTITIES_FILE)).unwrap();
        assert_eq!(trust.identities().count(), STANDARD.len());
        assert!(trust.identities().all(|i| i.name != "runner"));
        assert!(!dir.path().join("runner.nk").exists());
        assert!(remove_from_dir(dir.path(), "runner").is_err());
    }

    #[test]
    fn a_written_kit_loads_back_with_private_seeds() {
        let kit = Kit::generate(&STANDARD);
        let dir = tempfile::tempdir().unwrap();
        let seeds = kit.write(&dir.path().join("keys")).unwrap();
        let trust = Trust::load(&dir.path().join("keys").join(IDENTITIES_FILE)).unwrap();
        assert_eq!(trust.identities().count(), STANDARD.len());
        for path in seeds {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            }
            let seed = std::fs::read_to_string(&path).unwrap();
            let identity = Identity::from_seed(&seed, &trust).unwrap();
            assert_eq!(path.file_stem().unwrap().to_str(), Some(identity.name()));
        }
        let accounts = std::fs::read_to_string(dir.path().join("keys").join(ACCOUNTS_FILE)).unwrap();
        assert_eq!(accounts.matches("{ nkey: U").count(), STANDARD.len());
        assert!(accounts.contains("jetstream: enabled"));
    }
}
