//! Connections every service opens the same way: the Postgres pool and the NATS client,
//! from the `database` and `nats` config sections, with errors naming the setting to fix.

use flexcore_config::{DatabaseSettings, NatsSettings};
use flexcore_security::Identity;
use std::path::PathBuf;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// A connection that could not be opened. The messages include their causes, which are
/// therefore not also the errors' `source()` (`{:#}` names each cause once).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Postgres.
    #[error("cannot connect to Postgres (database.url / FLEXCORE__DATABASE__URL): {0}")]
    Postgres(sqlx::Error),
    /// NATS.
    #[error(
        "cannot connect to NATS at {url}{} (nats.url / FLEXCORE__NATS__URL; identity: \
         nats.nkey_seed_file or nats.nkey_seed; TLS: nats.tls_*): {cause}",
        user.as_deref().map(|user| format!(" as user {user:?}")).unwrap_or_default()
    )]
    Nats {
        /// The URL tried, without credentials.
        url: String,
        /// The user logged in as, if any (never the password).
        user: Option<String>,
        /// Why (in the message, so not also the error's `source()`).
        cause: async_nats::ConnectError,
    },
}

/// The Postgres pool of `database`.
pub async fn postgres(settings: &DatabaseSettings) -> Result<PgPool, ConnectError> {
    postgres_with(settings, &[]).await
}

/// The Postgres pool of `database`, with run-time parameters set on every connection
/// (e.g. `synchronous_commit`).
pub async fn postgres_with(settings: &DatabaseSettings, parameters: &[(&str, &str)]) -> Result<PgPool, ConnectError> {
    let options = PgConnectOptions::from_str(settings.url.expose())
        .map_err(ConnectError::Postgres)?
        .options(parameters.iter().copied());
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(ConnectError::Postgres)
}

/// A NATS client named `name` (shown by the server's monitoring), reconnecting forever,
/// logged in as `identity` (its NKey; replies in its own inbox `_INBOX.<name>`), or, when
/// `nats.user` is set (or `nats.url` carries credentials), with that user and password
/// (which async-nats would ignore in the URL, nats-io/nats.rs#1623, so they are taken out
/// of it and passed explicitly). TLS when `nats.tls_ca_file` is set or required.
pub async fn nats(
    name: &str,
    settings: &NatsSettings,
    identity: Option<&Identity>,
) -> Result<async_nats::Client, ConnectError> {
    nats_with(name, settings, identity, |options| options).await
}

/// Like [`nats`], with further options (e.g. `no_echo`).
pub async fn nats_with(
    name: &str,
    settings: &NatsSettings,
    identity: Option<&Identity>,
    more: impl FnOnce(async_nats::ConnectOptions) -> async_nats::ConnectOptions,
) -> Result<async_nats::Client, ConnectError> {
    let login = settings.login();
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .max_reconnects(None)
        .connection_timeout(settings.connect_timeout)
        .request_timeout(Some(settings.request_timeout));
    if let Some(identity) = identity {
        options = options.custom_inbox_prefix(identity.inbox_prefix());
    }
    match (&login.credentials, identity) {
        (Some((user, password)), _) => {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        (None, Some(identity)) => options = options.nkey(identity.seed().to_owned()),
        (None, None) => {}
    }
    if !settings.tls_ca_file.is_empty() {
        options = options.add_root_certificates(PathBuf::from(&settings.tls_ca_file));
    }
    if !settings.tls_cert_file.is_empty() || !settings.tls_key_file.is_empty() {
        options = options.add_client_certificate(
            PathBuf::from(&settings.tls_cert_file),
            PathBuf::from(&settings.tls_key_file),
        );
    }
    if settings.tls_required || !settings.tls_ca_file.is_empty() {
        options = options.require_tls(true);
    }
    more(options)
        .connect(login.url.as_str())
        .await
        .map_err(|cause| ConnectError::Nats {
            user: login
                .user()
                .map(str::to_owned)
                .or_else(|| identity.map(|i| format!("{} (NKey {})", i.name(), i.public_key()))),
            url: login.url,
            cause,
        })
}
