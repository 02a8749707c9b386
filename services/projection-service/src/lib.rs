//! `flexcore-projection`: read models built from the event stream, and the query API.
//!
//! # Layout
//! - [`projection`]: the projections (plugins, pipelines, runs, schedules, audit) and the
//!   engine that folds a batch of events into their rows; `views` holds each entity's fold.
//! - [`tables`]: table layouts and generations (blue/green), [`store`]: the checkpoint row
//!   and the exactly-once batch transaction.
//! - [`worker`]: leadership, catch-up from Postgres and the live JetStream consumer, one
//!   for all projections; [`rebuild`]: replays into a new generation and swaps it in.
//! - [`positions`]: every replica's view of each projection's checkpoint (for `min_position`).
//! - [`query`]: the NATS query API.
//! - [`metrics`]: projection lag and query metrics, and the readiness checks.
//! - [`run`]: wires them together until shutdown; `main.rs` only loads config and connects.

pub mod derived;
pub mod error;
pub mod metrics;
pub mod positions;
pub mod projection;
pub mod query;
pub mod rebuild;
pub mod store;
pub mod tables;
mod views;
pub mod worker;

/// This service and its version, as its replies and announcements name it
/// (`Flexcore-Service`).
pub const SERVICE: &str = concat!("flexcore-projection/", env!("CARGO_PKG_VERSION"));

use std::sync::Arc;

use anyhow::Context;
use flexcore_config::Settings;
use flexcore_eventstore::MIGRATOR;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use positions::Positions;
use query::QueryContext;
use worker::Shared;

/// This service's identity (role `projection`) and the identities file, as configured.
pub fn credentials(settings: &Settings) -> anyhow::Result<flexcore_service::security::Credentials> {
    Ok(flexcore_service::security::credentials(
        settings,
        flexcore_security::Role::Projection,
    )?)
}

/// The projection service's connection pools.
#[derive(Debug, Clone)]
pub struct Databases {
    /// The read models (schema `read`): written by the workers, read by the queries; its
    /// advisory locks elect each projection's leader.
    pub read: PgPool,
    /// The event store when `projection.database_url` names another database than
    /// `database.url` (its connections read-only: `default_transaction_read_only`);
    /// `None` when the read models live in the event store's database.
    pub separate_log: Option<PgPool>,
}

impl Databases {
    /// Both in one database (the event store's holds the read models).
    pub fn shared(pool: PgPool) -> Self {
        Self {
            read: pool,
            separate_log: None,
        }
    }

    /// The event store, from which catch-up and rebuilds read the log.
    pub fn log(&self) -> &PgPool {
        self.separate_log.as_ref().unwrap_or(&self.read)
    }

    /// Whether the read models live in a database of their own.
    pub fn separate(settings: &Settings) -> bool {
        !settings.projection.database_url.expose().is_empty()
    }
}

/// Connects to Postgres and NATS as configured: the read models' database
/// (`projection.database_url`, else `database.url`) and, when that is another database,
/// the event store read-only.
pub async fn connect(settings: &Settings) -> anyhow::Result<(Databases, async_nats::Client)> {
    let credentials = credentials(settings)?;
    // Read-model transactions need not wait for their WAL flush: rows and checkpoint
    // commit together, so a Postgres crash can only lose whole recent transactions, which
    // are re-applied identically from the older checkpoint (never half of one).
    let read_model_settings = flexcore_config::DatabaseSettings {
        url: if Databases::separate(settings) {
            settings.projection.database_url.clone()
        } else {
            settings.database.url.clone()
        },
        ..settings.database.clone()
    };
    let read = flexcore_service::connect::postgres_with(&read_model_settings, &[("synchronous_commit", "off")])
        .await
        .context("connecting to the read models' database")?;
    let databases = if Databases::separate(settings) {
        // The log is only ever read here: a connection that cannot write makes sure of it
        // (and a role with SELECT on `events` alone is all it needs).
        let log =
            flexcore_service::connect::postgres_with(&settings.database, &[("default_transaction_read_only", "on")])
                .await
                .context("connecting to the event store (database.url, read-only)")?;
        Databases {
            read,
            separate_log: Some(log),
        }
    } else {
        Databases::shared(read)
    };
    // No echo: a leader's position announcements are for the other replicas; this process
    // updates its own positions directly.
    let nats = flexcore_service::connect::nats_with(
        "flexcore-projection",
        &settings.nats,
        Some(&credentials.identity),
        |o| o.no_echo(),
    )
    .await?;
    Ok((databases, nats))
}

/// Runs the projection service until `shutdown`: migrations (if configured), read-model
/// set-up, the projection workers (if enabled), position tracking and the query loop.
///
/// The migrations run on the read models' database. They are one sequence for both
/// layouts, so a separate read-model database also gets the (unused, empty) log tables,
/// and the event store the (unused, empty) `read` schema; the event store is migrated by
/// the command service.
pub async fn run(
    settings: &Settings,
    nats: async_nats::Client,
    databases: Databases,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let credentials = credentials(settings)?;
    let pool = databases.read.clone();
    if settings.database.migrate_on_start {
        MIGRATOR.run(&pool).await.context("running migrations")?;
    }
    store::init(&pool).await.context("setting up the read models")?;
    for (kind, outdated) in store::upgrade_layouts(&pool)
        .await
        .context("checking the read models' layout")?
    {
        match outdated {
            store::Outdated::JsonbDocuments => tracing::info!(
                projection = kind.name(),
                "read model keeps documents as jsonb: rebuilding it with exact documents"
            ),
            store::Outdated::MissingColumns(columns) => tracing::info!(
                projection = kind.name(),
                columns = columns.join(", "),
                "read model lacked columns (added): rebuilding it to fill them"
            ),
            store::Outdated::MissingMinutes => tracing::info!(
                projection = kind.name(),
                "read model lacked its per-minute activity table (added): rebuilding it to fill it"
            ),
            store::Outdated::Layout { built, current } => tracing::info!(
                projection = kind.name(),
                built,
                current,
                "read model was built to another table layout: rebuilding it to this build's"
            ),
        }
    }
    let positions = Arc::new(Positions::default());
    positions
        .refresh(&pool)
        .await
        .context("reading projection checkpoints")?;

    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(metrics::sample(databases.clone(), stop.clone())));
    tasks.push(tokio::spawn({
        let (positions, nats, pool, stop) = (positions.clone(), nats.clone(), pool.clone(), stop.clone());
        let trust = credentials.trust.clone();
        async move {
            if let Err(error) = positions::follow(positions, nats, pool, trust, stop).await {
                tracing::warn!(%error, "position tracking stopped");
            }
        }
    }));
    if settings.projection.workers_enabled {
        let shared = Shared {
            pool: pool.clone(),
            separate_log: databases.separate_log.clone(),
            nats: nats.clone(),
            positions: positions.clone(),
            settings: settings.projection.clone(),
            identity: credentials.identity.clone(),
            trust: credentials.trust.clone(),
            verified: Arc::new(flexcore_security::VerifiedCache::new(worker::VERIFIED_CACHE)),
            // Marked by each leadership (`worker::lead`).
            derived_stale: Arc::default(),
        };
        tasks.push(tokio::spawn(worker::run(shared, stop.clone())));
    }
    let ctx = Arc::new(QueryContext {
        pool,
        separate_log: databases.separate_log,
        positions,
        pages: query::PageCache::new(settings.projection.list_cache_bytes),
        settings: settings.projection.clone(),
        upcoming: Default::default(),
    });
    let served = query::serve(nats, ctx, shutdown).await;
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }
    served
}
