//! The raw ceiling: N connections each doing single-event INSERT (autocommit: one
//! transaction and one commit per event) into a scratch table shaped like `events`.

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Phase, Window};

const CREATE: &str = "CREATE TABLE IF NOT EXISTS bench_raw_events (
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

/// Runs the phase against `database_url`.
pub async fn run(database_url: &str, clients: usize, warmup: Duration, duration: Duration) -> anyhow::Result<Phase> {
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(clients).unwrap_or(u32::MAX))
        .min_connections(u32::try_from(clients).unwrap_or(u32::MAX))
        .connect(database_url)
        .await
        .with_context(|| "cannot connect to Postgres (--database-url / FLEXCORE__DATABASE__URL)")?;
    sqlx::query(CREATE).execute(&pool).await?;
    let window = Window::starting_now(warmup, duration);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut phase = Phase::new(duration)?;
                let aggregate = Uuid::new_v4();
                let data = serde_json::json!({"reason": "bench", "requested_by": "flexctl", "tags": ["a", "b"], "note": "x".repeat(200)});
                let mut version = 0i64;
                while Instant::now() < window.until {
                    version += 1;
                    let started = Instant::now();
                    let result = sqlx::query(
                        "INSERT INTO bench_raw_events (event_id, aggregate_id, version, event_type, data, metadata) \
                         VALUES ($1, $2, $3, 'pipeline.paused', $4, '{\"actor\":\"bench\"}')",
                    )
                    .bind(Uuid::now_v7())
                    .bind(aggregate)
                    .bind(version)
                    .bind(Json(&data))
                    .execute(&pool)
                    .await;
                    if started >= window.from && Instant::now() <= window.until {
                        match result {
                            Ok(_) => {
                                phase.ok += 1;
                                phase.latency.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX).max(1))?;
                            }
                            Err(_) => *phase.errors.entry("database".into()).or_default() += 1,
                        }
                    }
                }
                anyhow::Ok(phase)
            })
        })
        .collect();
    let mut total = Phase::new(duration)?;
    for t in tasks {
        total.merge(t.await??)?;
    }
    sqlx::query("TRUNCATE bench_raw_events").execute(&pool).await?;
    Ok(total)
}
