//! `flexcore-command`: validates commands against the aggregates and appends their
//! events to the Postgres event store; its relay publishes them to JetStream.
//!
//! # Layout
//! - [`domain`]: the aggregates (Plugin, Pipeline, Run, Schedule): pure `decide` and
//!   `evolve`, no I/O, tested given/when/then.
//! - [`service`]: the I/O around them: the NATS request loop ([`service::server`]),
//!   command execution with retries and idempotency ([`service::executor`]),
//!   aggregate loading with a cache ([`service::cache`]), and the metrics and readiness
//!   checks the admin server shows ([`service::metrics`]).
//! - [`run`]: wires store, relay and server together until shutdown; `main.rs` only
//!   loads config, telemetry and connections.

pub mod domain;
pub mod service;

/// This service and its version, as its replies and announcements name it
/// (`Flexcore-Service`).
pub const SERVICE: &str = concat!("flexcore-command/", env!("CARGO_PKG_VERSION"));

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;
use flexcore_config::Settings;
use flexcore_eventstore::append::GroupCommitConfig;
use flexcore_eventstore::relay::{self, RelayConfig};
use flexcore_eventstore::streams::{self, StreamSettings};
use flexcore_eventstore::{EventStore, MIGRATOR};
use flexcore_security::Role;
use flexcore_service::security::Credentials;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use service::executor::Executor;
use service::server::{self, ServerLimits};

/// This service's identity (role `command`) and the identities file, as configured.
pub fn credentials(settings: &Settings) -> anyhow::Result<Credentials> {
    Ok(flexcore_service::security::credentials(settings, Role::Command)?)
}

/// Connects to Postgres and NATS as configured.
pub async fn connect(settings: &Settings) -> anyhow::Result<(PgPool, async_nats::Client)> {
    let credentials = credentials(settings)?;
    let pool = flexcore_service::connect::postgres(&settings.database).await?;
    let nats = flexcore_service::connect::nats("flexcore-command", &settings.nats, Some(&credentials.identity)).await?;
    Ok((pool, nats))
}

/// The streams' settings in `settings`.
pub fn stream_settings(settings: &Settings) -> StreamSettings {
    StreamSettings {
        events_max_age: (settings.streams.events_max_age_days > 0)
            .then(|| Duration::from_secs(settings.streams.events_max_age_days * 86_400)),
        replicas: settings.streams.replicas,
        duplicate_window: Duration::from_secs(settings.streams.duplicate_window_seconds),
        logs_max_age: Duration::from_secs(settings.runner.log_retention_days.max(1) * 86_400),
        plugins_max_bytes: (settings.streams.plugins_max_bytes > 0).then_some(settings.streams.plugins_max_bytes),
    }
}

/// `flexcore-command setup`: connects as the configured identity, which must have role
/// `setup`, and creates the system's streams and plugin bucket or applies changed
/// settings ([`streams::setup`]); idempotent.
pub async fn setup(settings: &Settings) -> anyhow::Result<()> {
    let credentials = flexcore_service::security::credentials(settings, Role::Setup)?;
    let nats = flexcore_service::connect::nats("flexcore-setup", &settings.nats, Some(&credentials.identity)).await?;
    let js = jetstream::new(nats.clone());
    streams::setup(&js, &stream_settings(settings))
        .await
        .context("setting up the JetStream streams")?;
    nats.flush().await.context("flushing to NATS")?;
    Ok(())
}

/// Runs the command service until `shutdown`: migrations (if configured), waiting for
/// the streams (setup creates them), the relay candidate, and the command loop. On shutdown it drains in-flight commands, then
/// stops the relay.
pub async fn run(
    settings: &Settings,
    nats: async_nats::Client,
    pool: PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    service::metrics::install();
    let credentials = credentials(settings)?;
    if settings.database.migrate_on_start {
        MIGRATOR.run(&pool).await.context("running migrations")?;
    }
    let js = jetstream::new(nats.clone());
    for name in [
        flexcore_contracts::subjects::EVENTS_STREAM,
        flexcore_contracts::subjects::WORK_STREAM,
    ] {
        if flexcore_service::streams::wait_for(&js, name, &shutdown)
            .await
            .is_none()
        {
            return Ok(());
        }
    }
    streams::check(&js, &stream_settings(settings)).await;

    let c = &settings.command;
    let store = EventStore::new(
        pool.clone(),
        GroupCommitConfig {
            writers: c.writers,
            batch_max: c.batch_max_commands,
            linger: c.batch_linger,
        },
    );
    let executor = Arc::new(Executor::new(store, c.aggregate_cache_size, c.conflict_retries));

    let relay_stop = CancellationToken::new();
    let relay_task = settings.relay.enabled.then(|| {
        let r = &settings.relay;
        let config = RelayConfig {
            batch_size: r.batch_size,
            idle_poll: r.idle_poll,
            leader_retry: r.leader_retry,
            publish_timeout: r.publish_timeout,
            signer: credentials.identity.clone(),
        };
        tokio::spawn(relay::run(
            (*pool.connect_options()).clone(),
            js.clone(),
            config,
            relay_stop.clone(),
        ))
    });

    let limits = ServerLimits {
        max_payload_bytes: c.max_payload_bytes,
        max_in_flight: c.max_in_flight,
        shutdown_grace: c.shutdown_grace,
        max_module_bytes: settings.runner.max_module_bytes,
    };
    let auth = server::Auth {
        trust: credentials.trust,
        unsigned: settings.security.unsigned_commands,
    };
    let served = server::serve(nats, executor, limits, auth, shutdown).await;
    relay_stop.cancel();
    if let Some(task) = relay_task {
        let _ = task.await;
    }
    served
}
