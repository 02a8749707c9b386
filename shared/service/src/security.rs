//! This process's identity and the identities file, from the `security` and `nats`
//! sections, with errors naming the setting to fix.

use std::path::Path;

use flexcore_config::Settings;
pub use flexcore_security::Credentials;
use flexcore_security::{Identity, Role, Trust};

/// Why the credentials cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// No identities file configured.
    #[error(
        "security.identities_file (FLEXCORE__SECURITY__IDENTITIES_FILE) is not set: FlexCore runs only with \
         authenticated identities; generate them with `flexctl security init` (docs/security.md)"
    )]
    NoIdentitiesFile,
    /// No seed configured.
    #[error(
        "no NKey seed: set nats.nkey_seed_file (FLEXCORE__NATS__NKEY_SEED_FILE) or nats.nkey_seed \
         (FLEXCORE__NATS__NKEY_SEED) to this process's identity (docs/security.md)"
    )]
    NoSeed,
    /// The seed file cannot be read.
    #[error("cannot read nats.nkey_seed_file {path}: {source}")]
    SeedFile {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The identities file or the seed is invalid, or the identity has another role.
    #[error(transparent)]
    Security(#[from] flexcore_security::SecurityError),
}

/// The identities file and this process's seed; its identity must have `role`.
pub fn credentials(settings: &Settings, role: Role) -> Result<Credentials, CredentialsError> {
    let (identity, trust) = load(settings)?;
    Ok(Credentials {
        identity: identity.require(role)?,
        trust,
    })
}

/// The identities file and this process's seed, whatever its role.
pub fn load(settings: &Settings) -> Result<(Identity, Trust), CredentialsError> {
    if settings.security.identities_file.is_empty() {
        return Err(CredentialsError::NoIdentitiesFile);
    }
    let trust = Trust::load(Path::new(&settings.security.identities_file))?;
    let seed = seed(&settings.nats)?;
    Ok((Identity::from_seed(&seed, &trust)?, trust))
}

/// The seed of `nats.nkey_seed`, else of the file `nats.nkey_seed_file`.
pub fn seed(nats: &flexcore_config::NatsSettings) -> Result<String, CredentialsError> {
    if !nats.nkey_seed.expose().trim().is_empty() {
        return Ok(nats.nkey_seed.expose().trim().to_owned());
    }
    if nats.nkey_seed_file.is_empty() {
        return Err(CredentialsError::NoSeed);
    }
    std::fs::read_to_string(&nats.nkey_seed_file)
        .map(|text| text.trim().to_owned())
        .map_err(|source| CredentialsError::SeedFile {
            path: nats.nkey_seed_file.clone(),
            source,
        })
}
