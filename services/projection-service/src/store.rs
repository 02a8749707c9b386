//! `read.projections`: each projection's generation and checkpoint, and the transaction
//! that applies a batch and moves the checkpoint together (exactly-once effects).

use chrono::Utc;
use flexcore_contracts::views::RebuildStatus;
use flexcore_eventstore::{Checkpoint, RecordedEvent};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

use crate::error::ProjectionError;
use crate::positions::checkpoint;
use crate::projection::Kind;
use crate::tables;

/// Advisory transaction lock serialising first-time set-up across replicas.
const INIT_LOCK_KEY: i64 = 0x6678_7072_6f6a_ffff;

/// What a projection's leader holds: the generation it writes and where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    /// Table generation written and served.
    pub generation: u32,
    /// Last applied event, in reading order.
    pub checkpoint: Checkpoint,
}

/// What [`commit_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The events after the checkpoint were applied; this many changed a row.
    Applied(u64),
    /// Every event was at or below the checkpoint (a redelivery).
    Skipped,
    /// The batch does not follow the checkpoint directly: events are missing in between
    /// (read them from the event store first).
    Gap,
    /// The stored generation or checkpoint differs from the caller's (another worker
    /// moved it); the caller's [`Live`] was reloaded.
    Resync,
}

/// Creates `read.projections` rows, generation-1 tables and the views of every
/// projection that has none yet. Safe to run from every replica at once.
pub async fn init(pool: &PgPool) -> Result<(), ProjectionError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(INIT_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    for kind in Kind::ALL {
        let inserted =
            sqlx::query("INSERT INTO read.projections (name, generation) VALUES ($1, 1) ON CONFLICT (name) DO NOTHING")
                .bind(kind.name())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if inserted == 1 {
            tables::create_generation(&mut tx, kind.table(), 1, true).await?;
            tables::swap_views(&mut tx, kind.table(), 1).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// The stored generation and checkpoint of `kind`.
pub async fn load(conn: &mut PgConnection, kind: Kind, lock: bool) -> Result<Live, ProjectionError> {
    let sql = if lock {
        "SELECT generation, transaction_id::text::bigint, global_position FROM read.projections WHERE name = $1 FOR UPDATE"
    } else {
        "SELECT generation, transaction_id::text::bigint, global_position FROM read.projections WHERE name = $1"
    };
    let (generation, tx, pos): (i32, i64, i64) = sqlx::query_as(sql).bind(kind.name()).fetch_one(&mut *conn).await?;
    Ok(Live {
        generation: u32::try_from(generation).unwrap_or_default(),
        checkpoint: checkpoint(tx, pos),
    })
}

/// Whether the log holds exactly `count` events in `(after, upto]`: a batch read from
/// JetStream is applied only when nothing in between is missing. Every event up to
/// `upto` is committed (the relay read it below the transaction horizon), so the count
/// is exact.
async fn contiguous(
    conn: &mut PgConnection,
    after: Checkpoint,
    upto: Checkpoint,
    count: usize,
) -> Result<bool, ProjectionError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events \
         WHERE (transaction_id, global_position) > ($1::text::xid8, $2) \
           AND (transaction_id, global_position) <= ($3::text::xid8, $4)",
    )
    .bind(after.transaction_id.to_string())
    .bind(i64::try_from(after.global_position).unwrap_or(i64::MAX))
    .bind(upto.transaction_id.to_string())
    .bind(i64::try_from(upto.global_position).unwrap_or(i64::MAX))
    .fetch_one(&mut *conn)
    .await?;
    Ok(usize::try_from(n).is_ok_and(|n| n == count))
}

/// Applies the events after `live.checkpoint` and moves the checkpoint, in one
/// transaction that first locks the projection's row. `verified` batches come from the
/// event store (contiguous by construction); others are checked for gaps.
pub async fn commit_batch(
    pool: &PgPool,
    kind: Kind,
    live: &mut Live,
    events: &[RecordedEvent],
    verified: bool,
) -> Result<Committed, ProjectionError> {
    let mut tx = begin(pool).await?;
    let stored = load(&mut tx, kind, true).await?;
    if stored != *live {
        *live = stored;
        return Ok(Committed::Resync);
    }
    // In reading order, without anything at or below the checkpoint or repeated.
    let mut fresh: Vec<RecordedEvent> = Vec::with_capacity(events.len());
    let mut last = live.checkpoint;
    for event in events {
        if event.checkpoint() > last {
            last = event.checkpoint();
            fresh.push(event.clone());
        }
    }
    if fresh.is_empty() {
        return Ok(Committed::Skipped);
    }
    if !verified && !contiguous(&mut tx, live.checkpoint, last, fresh.len()).await? {
        return Ok(Committed::Gap);
    }
    let changed = kind.apply(&mut tx, live.generation, &fresh).await?;
    sqlx::query(
        "UPDATE read.projections SET transaction_id = $2::text::xid8, global_position = $3, \
         events_applied = events_applied + $4, updated_at = now() WHERE name = $1",
    )
    .bind(kind.name())
    .bind(last.transaction_id.to_string())
    .bind(i64::try_from(last.global_position).unwrap_or(i64::MAX))
    .bind(i64::try_from(fresh.len()).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    live.checkpoint = last;
    Ok(Committed::Applied(changed))
}

/// Begins a read-model transaction without waiting for its WAL flush at commit
/// (`synchronous_commit = off`). Safe for projections: the rows and the checkpoint are in
/// the same transaction, so a Postgres crash can only lose whole recent transactions,
/// which are re-applied identically from the older checkpoint; never half of one.
pub async fn begin(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, ProjectionError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// The latest rebuild status of `kind`.
pub async fn rebuild_status(pool: &PgPool, kind: Kind) -> Result<Option<RebuildStatus>, ProjectionError> {
    let status: Option<Json<RebuildStatus>> =
        sqlx::query_scalar("SELECT rebuild FROM read.projections WHERE name = $1 AND rebuild IS NOT NULL")
            .bind(kind.name())
            .fetch_optional(pool)
            .await?;
    Ok(status.map(|s| s.0))
}

/// Records a rebuild's progress.
pub async fn save_rebuild_status(
    conn: &mut PgConnection,
    kind: Kind,
    status: &RebuildStatus,
) -> Result<(), ProjectionError> {
    sqlx::query("UPDATE read.projections SET rebuild = $2 WHERE name = $1")
        .bind(kind.name())
        .bind(Json(status))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Requests a rebuild of `kind`; `None` when one is already requested or running.
pub async fn request_rebuild(pool: &PgPool, kind: Kind) -> Result<Option<RebuildStatus>, ProjectionError> {
    let status = RebuildStatus {
        state: "requested".into(),
        generation: None,
        processed: 0,
        target: 0,
        requested_at: Utc::now(),
        started_at: None,
        finished_at: None,
        events_per_second: None,
        error: None,
    };
    let done = sqlx::query(
        "UPDATE read.projections SET rebuild = $2 WHERE name = $1 \
         AND (rebuild IS NULL OR rebuild->>'state' NOT IN ('requested', 'running'))",
    )
    .bind(kind.name())
    .bind(Json(&status))
    .execute(pool)
    .await?;
    Ok((done.rows_affected() == 1).then_some(status))
}
