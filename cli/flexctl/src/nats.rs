//! How flexctl reaches NATS: the server and the login to use there, made once from the
//! global options and passed down to every command that connects.
//!
//! No process-wide login: a caller that needs another one (`flexctl dev` logs in as the
//! `flexctl` identity it generated, `bench console` also as the runner) builds another
//! [`Nats`] rather than changing what every later connection of the process would use.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::Client;
use flexcore_config::Secret;
use flexcore_security::Identity;

use crate::api::Api;

/// How long one connection attempt and one request wait (a CLI gives up on a server that
/// is not there rather than waiting for it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients (of a benchmark) sharing one NATS connection.
pub const CLIENTS_PER_CONNECTION: usize = 16;

/// Who this process is on NATS: the user and password (`--nats-user`, `--nats-password`)
/// or the identity (`--nkey-seed-file` with `--identities-file`) to log in as, which also
/// signs commands, and TLS (`--tls-*`).
#[derive(Debug, Clone)]
pub struct NatsLogin {
    /// User to log in as (empty: the URL's, if any, else the identity's NKey).
    pub user: String,
    /// Its password.
    pub password: Secret,
    /// This operator's identity: logs in (unless `user` is set) and signs commands.
    pub identity: Option<Identity>,
    /// CA certificates to trust for the server's certificate (TLS on when set).
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub tls_client: Option<(PathBuf, PathBuf)>,
}

impl Default for NatsLogin {
    /// Anonymous, or the credentials in the URL; no TLS.
    fn default() -> Self {
        Self {
            user: String::new(),
            password: Secret::new(""),
            identity: None,
            tls_ca_file: None,
            tls_client: None,
        }
    }
}

/// A NATS server and the login to use there.
#[derive(Debug, Clone)]
pub struct Nats {
    /// The server (`--nats-url`); credentials in it are used when `login` has none.
    pub url: String,
    /// How to log in.
    pub login: NatsLogin,
}

impl Nats {
    /// `url`, logged in as `login` says.
    pub fn new(url: impl Into<String>, login: NatsLogin) -> Self {
        Self { url: url.into(), login }
    }

    /// One connection (a clear error when the server is unreachable).
    pub async fn connect(&self) -> anyhow::Result<Client> {
        self.connections(1)
            .await?
            .pop()
            // Not the URL: it may carry a password.
            .ok_or_else(|| anyhow::anyhow!("no NATS connection"))
    }

    /// One connection per [`CLIENTS_PER_CONNECTION`] clients (at least one), logged in
    /// as the login says, else with the credentials in the URL (which async-nats would
    /// ignore, so they are taken out of the URL; errors show it without them).
    pub async fn connections(&self, clients: usize) -> anyhow::Result<Vec<Client>> {
        self.connections_as(clients, None).await
    }

    /// [`Nats::connections`], logged in as `identity` instead of the login's identity
    /// when given.
    pub async fn connections_as(&self, clients: usize, identity: Option<&Identity>) -> anyhow::Result<Vec<Client>> {
        self.connections_with(clients, identity, Some(3)).await
    }

    /// One connection that keeps trying to reconnect after the server goes away, for the
    /// commands that follow a stream (`events tail`, `run logs --follow`): they watch it and
    /// give up themselves after their `--reconnect-timeout` (see `crate::follow::Watch`).
    pub async fn connect_following(&self) -> anyhow::Result<Client> {
        self.connections_with(1, None, None)
            .await?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no NATS connection"))
    }

    async fn connections_with(
        &self,
        clients: usize,
        identity: Option<&Identity>,
        max_reconnects: Option<usize>,
    ) -> anyhow::Result<Vec<Client>> {
        let login = &self.login;
        let identity = identity.or(login.identity.as_ref());
        let path = |p: Option<&PathBuf>| p.map(|p| p.display().to_string()).unwrap_or_default();
        let settings = flexcore_config::NatsSettings {
            url: self.url.clone(),
            user: login.user.clone(),
            password: login.password.clone(),
            tls_ca_file: path(login.tls_ca_file.as_ref()),
            tls_cert_file: path(login.tls_client.as_ref().map(|(cert, _)| cert)),
            tls_key_file: path(login.tls_client.as_ref().map(|(_, key)| key)),
            connect_timeout: REQUEST_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            ..Default::default()
        };
        let count = clients.div_ceil(CLIENTS_PER_CONNECTION).max(1);
        let mut connections = Vec::with_capacity(count);
        for _ in 0..count {
            // A CLI gives up on a server that is not there rather than waiting for it.
            let client = flexcore_service::connect::nats_with("flexctl", &settings, identity, |o| {
                o.max_reconnects(max_reconnects)
            })
            .await
            .context(
                "flexctl cannot connect to NATS (--nats-url; --nkey-seed-file and --identities-file as `flexctl dev` \
                 prints them; --tls-*): is nats-server running?",
            )?;
            connections.push(client);
        }
        Ok(connections)
    }

    /// The typed client on `nats`, signing commands as the login's identity, if any.
    pub fn typed(&self, nats: Client) -> flexcore_client::Client {
        let client = flexcore_client::Client::new(nats);
        match &self.login.identity {
            Some(identity) => client.with_identity(identity.clone()),
            None => client,
        }
    }

    /// The FlexCore API over one new connection, signing as the login's identity.
    pub async fn api(&self) -> anyhow::Result<Api> {
        Ok(Api::new(self.typed(self.connect().await?)))
    }
}
