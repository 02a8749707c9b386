//! Phase 2, the raw ceiling: N connections each doing single-row INSERTs in autocommit
//! (one transaction and one commit per event) into a scratch table shaped like `events`,
//! on the same Postgres. It bounds what any one-event-per-transaction writer could do.

use std::str::FromStr as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::ConnectOptions as _;
use uuid::Uuid;

use super::stats::PhaseStats;
use super::Window;

/// The scratch table. Like `events` (identity position, `xid8` of the writing
/// transaction, unique event id and aggregate version, jsonb payloads), so an insert
/// costs what an event append costs at least; kept between runs, emptied after each.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS bench_raw_events (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id uuid NOT NULL UNIQUE,
    aggregate_id uuid NOT NULL,
    version bigint NOT NULL,
    event_type text NOT NULL,
    data jsonb NOT NULL,
    metadata jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (aggregate_id, version))";
const INSERT: &str = "INSERT INTO bench_raw_events (event_id, aggregate_id, version, event_type, data, metadata) \
                      VALUES ($1, $2, $3, $4, $5, $6)";
const TRUNCATE: &str = "TRUNCATE bench_raw_events RESTART IDENTITY";
/// How long a task waits for a connection before counting an error.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs phase 2 against `database_url` with `clients` connections.
pub async fn run(
    database_url: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<PhaseStats> {
    let shown_url = flexcore_config::url_text::redact(database_url);
    let connections = u32::try_from(clients).context("too many clients for one pool")?;
    let options = PgConnectOptions::from_str(database_url)
        .with_context(|| format!("invalid --database-url {shown_url}"))?
        // Slow-statement warnings would flood stderr under load; latencies are measured.
        .disable_statement_logging();
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .min_connections(connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .with_context(|| {
            format!("cannot connect to Postgres at {shown_url} (--database-url / FLEXCORE__DATABASE__URL)")
        })?;
    sqlx::raw_sql(CREATE_TABLE)
        .execute(&pool)
        .await
        .context("creating the scratch table bench_raw_events")?;

    tracing::info!(
        connections = clients,
        warmup = %flexctl::duration::format_duration(warmup),
        duration = %flexctl::duration::format_duration(duration),
        database = %shown_url,
        "phase 2: raw single-row INSERT+COMMIT ceiling"
    );
    let window = Window::after_warmup(warmup, duration);
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(insert_loop(pool.clone(), window)))
        .collect();
    let mut total = PhaseStats::new(window.length())?;
    let mut task_error = None;
    for task in tasks {
        match task.await.context("an insert task stopped unexpectedly") {
            Ok(Ok(stats)) => total.merge(&stats)?,
            Ok(Err(e)) | Err(e) => task_error = task_error.or(Some(e)),
        }
    }

    // Emptied even when the phase failed, so the scratch table never grows.
    let truncated = sqlx::raw_sql(TRUNCATE).execute(&pool).await;
    pool.close().await;
    if let Some(e) = task_error {
        return Err(e);
    }
    truncated.context("emptying bench_raw_events")?;
    if total.ok == 0 {
        bail!(
            "no insert committed in the measured window ({} errors); first failure: {}",
            total.errors(),
            total.first_failure.as_deref().unwrap_or("none")
        );
    }
    Ok(total)
}

/// One connection's loop: a new event of its own aggregate per insert.
async fn insert_loop(pool: PgPool, window: Window) -> anyhow::Result<PhaseStats> {
    let mut stats = PhaseStats::new(window.length())?;
    let aggregate_id = Uuid::new_v4();
    let data = event_data(aggregate_id);
    let mut version: i64 = 0;
    while !window.is_over(Instant::now()) {
        version += 1;
        let event_type = if version % 2 == 1 {
            "pipeline.paused"
        } else {
            "pipeline.resumed"
        };
        let started = Instant::now();
        let result = sqlx::query(INSERT)
            .bind(Uuid::now_v7())
            .bind(aggregate_id)
            .bind(version)
            .bind(event_type)
            .bind(Json(&data))
            .bind(Json(event_metadata()))
            .execute(&pool)
            .await;
        let finished = Instant::now();
        match result {
            Ok(_) if window.measures(finished) => stats.record_ok(finished - started),
            Ok(_) => {}
            Err(error) => {
                if window.measures(finished) {
                    stats.record_failed(&error_kind(&error));
                }
                stats.remember_failure(|| error.to_string());
            }
        }
    }
    Ok(stats)
}

/// An event-sized `data` payload (about 300 bytes as JSON).
fn event_data(aggregate_id: Uuid) -> serde_json::Value {
    serde_json::json!({
        "pipeline_id": aggregate_id,
        "reason": "flexctl bench commands: raw single-row INSERT+COMMIT ceiling",
        "definition_version": 1,
        "steps": [
            {"plugin": "bench-extractor@1.0.0", "kind": "extractor", "runtime": "wasm"},
            {"plugin": "bench-loader@1.0.0", "kind": "loader", "runtime": "wasm"}
        ],
        "owner": "bench",
        "max_active_runs": 1
    })
}

/// `metadata` like the command service writes it: causation, correlation, actor.
fn event_metadata() -> serde_json::Value {
    serde_json::json!({
        "causation_id": Uuid::new_v4(),
        "correlation_id": Uuid::new_v4().to_string(),
        "actor": "bench"
    })
}

/// The name an insert error is counted under: its SQLSTATE, else its kind.
fn error_kind(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .map_or_else(|| "database".to_owned(), |c| format!("sqlstate_{c}")),
        sqlx::Error::PoolTimedOut => "pool_timed_out".to_owned(),
        sqlx::Error::Io(_) => "io".to_owned(),
        _ => "other".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_event_sized() {
        let data = serde_json::to_string(&event_data(Uuid::new_v4())).unwrap();
        assert!(
            (250..=350).contains(&data.len()),
            "data is {} bytes: {data}",
            data.len()
        );
        let metadata = serde_json::to_string(&event_metadata()).unwrap();
        assert!(metadata.len() < 200, "{metadata}");
    }

    #[test]
    fn errors_are_counted_by_kind() {
        assert_eq!(error_kind(&sqlx::Error::PoolTimedOut), "pool_timed_out");
        assert_eq!(error_kind(&sqlx::Error::RowNotFound), "other");
    }
}
