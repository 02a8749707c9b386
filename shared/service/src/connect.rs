//! Connections every service opens the same way: the Postgres pool and the NATS client,
//! from the `database` and `nats` config sections, with errors naming the setting to fix.

use std::time::Duration;

use flexcore_config::{DatabaseSettings, NatsSettings};
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// A connection that could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Postgres.
    #[error("cannot connect to Postgres (database.url / FLEXCORE__DATABASE__URL): {0}")]
    Postgres(#[source] sqlx::Error),
    /// NATS.
    #[error(
        "cannot connect to NATS at {url}{} (nats.url / FLEXCORE__NATS__URL; credentials: \
         nats.user, nats.password): {source}",
        user.as_deref().map(|user| format!(" as user {user:?}")).unwrap_or_default()
    )]
    Nats {
        /// The URL tried, without credentials.
        url: String,
        /// The user logged in as, if any (never the password).
        user: Option<String>,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
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
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_with(options)
        .await
        .map_err(ConnectError::Postgres)
}

/// A NATS client named `name` (shown by the server's monitoring), reconnecting forever,
/// logged in with the credentials of [`NatsSettings::login`]: `nats.user` and
/// `nats.password`, else those in `nats.url` (which async-nats would ignore,
/// nats-io/nats.rs#1623, so they are taken out of the URL and passed explicitly).
pub async fn nats(name: &str, settings: &NatsSettings) -> Result<async_nats::Client, ConnectError> {
    nats_with(name, settings, |options| options).await
}

/// Like [`nats`], with further options (e.g. `no_echo`).
pub async fn nats_with(
    name: &str,
    settings: &NatsSettings,
    more: impl FnOnce(async_nats::ConnectOptions) -> async_nats::ConnectOptions,
) -> Result<async_nats::Client, ConnectError> {
    let login = settings.login();
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .max_reconnects(None)
        .connection_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .request_timeout(Some(Duration::from_millis(settings.request_timeout_ms)));
    if let Some((user, password)) = &login.credentials {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    more(options)
        .connect(login.url.as_str())
        .await
        .map_err(|source| ConnectError::Nats {
            user: login.user().map(str::to_owned),
            url: login.url,
            source,
        })
}
