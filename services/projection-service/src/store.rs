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
        let inserted = sqlx::query(
            "INSERT INTO read.projections (name, generation, layout) VALUES ($1, 1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(kind.name())
        .bind(kind.table().layout())
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

/// Why a served read-model table is out of date (see [`upgrade_layouts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outdated {
    /// It keeps documents as `jsonb` (built before documents were kept as exact text).
    JsonbDocuments,
    /// It lacks these columns (added to it now, empty until the rebuild fills them).
    MissingColumns(Vec<String>),
    /// It lacks its per-minute activity table (added now, filled by the rebuild).
    MissingMinutes,
    /// It was built to another layout (`read.projections.layout`) than this build's.
    Layout {
        /// The layout it was built to.
        built: String,
        /// This build's.
        current: String,
    },
}

/// Brings every projection's served tables up to the current layout. A table built to
/// another layout than this build's ([`tables::TableSpec::layout`], recorded in
/// `read.projections`) or keeping documents as `jsonb` is rebuilt; a table that lacks
/// columns gets them at once (nullable, so the live worker keeps writing, and its view
/// re-created to show them) and is rebuilt to fill them for the rows written before. The
/// old tables serve until the rebuild swaps the new ones in (and records the layout).
/// Safe from every replica at once. Returns what it asked to rebuild.
pub async fn upgrade_layouts(pool: &PgPool) -> Result<Vec<(Kind, Outdated)>, ProjectionError> {
    let mut requested = Vec::new();
    for kind in Kind::ALL {
        let spec = kind.table();
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(INIT_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
        let (generation, built): (i32, Option<String>) =
            sqlx::query_as("SELECT generation, layout FROM read.projections WHERE name = $1")
                .bind(kind.name())
                .fetch_one(&mut *tx)
                .await?;
        let generation = u32::try_from(generation).unwrap_or_default();
        let table = spec.table(generation);
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = 'read' AND table_name = $1",
        )
        .bind(table.trim_start_matches("read."))
        .fetch_all(&mut *tx)
        .await?;
        let minutes_missing = spec.minutes
            && !sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
                .bind(spec.minutes_table(generation))
                .fetch_one(&mut *tx)
                .await?;
        // Whatever else, the served tables get what queries read at once (the rebuild
        // then fills it for the rows written before).
        let mut outdated = Vec::new();
        if columns.iter().any(|(name, ty)| name == "doc" && ty == "jsonb") {
            outdated.push(Outdated::JsonbDocuments);
        }
        // First: re-pointing the views (as adding columns does) needs every table there.
        if minutes_missing {
            tables::add_minutes(&mut tx, spec, generation).await?;
            outdated.push(Outdated::MissingMinutes);
        }
        let missing: Vec<&(&str, &str)> = spec
            .columns
            .iter()
            .filter(|(name, _)| !columns.iter().any(|(have, _)| have == name))
            .collect();
        if !missing.is_empty() {
            tables::add_columns(&mut tx, spec, generation, &missing).await?;
            outdated.push(Outdated::MissingColumns(
                missing.iter().map(|(name, _)| (*name).to_owned()).collect(),
            ));
        }
        let current = spec.layout();
        match built {
            Some(built) if built != current => outdated.push(Outdated::Layout { built, current }),
            Some(_) => {}
            // Built before layouts were recorded: it has what this build needs unless
            // one of the checks above found otherwise (then the rebuild records it).
            None if outdated.is_empty() => {
                sqlx::query("UPDATE read.projections SET layout = $2 WHERE name = $1")
                    .bind(kind.name())
                    .bind(&current)
                    .execute(&mut *tx)
                    .await?;
            }
            None => {}
        }
        tx.commit().await?;
        if !outdated.is_empty() && request_rebuild(pool, kind).await?.is_some() {
            requested.extend(outdated.into_iter().map(|o| (kind, o)));
        }
    }
    Ok(requested)
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

/// Whether the log holds exactly `count` events in `(from, to]`: the check of [`advance`]
/// on its own, for an event store in another database.
async fn contiguous(log: &PgPool, from: Checkpoint, to: Checkpoint, count: usize) -> Result<bool, ProjectionError> {
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events \
         WHERE (transaction_id, global_position) > ($1::text::xid8, $2) \
           AND (transaction_id, global_position) <= ($3::text::xid8, $4)",
    )
    .bind(from.transaction_id.to_string())
    .bind(i64::try_from(from.global_position).unwrap_or(i64::MAX))
    .bind(to.transaction_id.to_string())
    .bind(i64::try_from(to.global_position).unwrap_or(i64::MAX))
    .fetch_one(log)
    .await?;
    Ok(held == i64::try_from(count).unwrap_or(i64::MAX))
}

/// Moves the checkpoint from `from` to `to` by `count` events, only if it still is at
/// `from` in `generation` and — unless `verified` — the log holds exactly `count` events
/// in `(from, to]`: a batch read from JetStream is applied only when nothing in between
/// is missing. Every event up to `to` is committed (the relay read it below the
/// transaction horizon), so the count is exact. One statement, so a batch that changes
/// no row costs one round trip. False when it did not move.
async fn advance<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    kind: Kind,
    generation: u32,
    from: Checkpoint,
    to: Checkpoint,
    count: usize,
    verified: bool,
) -> Result<bool, ProjectionError> {
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    let moved = sqlx::query(
        "UPDATE read.projections SET transaction_id = $5::text::xid8, global_position = $6, \
           events_applied = events_applied + $7, updated_at = now() \
         WHERE name = $1 AND generation = $2 AND transaction_id = $3::text::xid8 AND global_position = $4 \
           AND ($8 OR (SELECT count(*) FROM events \
                WHERE (transaction_id, global_position) > ($3::text::xid8, $4) \
                  AND (transaction_id, global_position) <= ($5::text::xid8, $6)) = $7)",
    )
    .bind(kind.name())
    .bind(i32::try_from(generation).unwrap_or(i32::MAX))
    .bind(from.transaction_id.to_string())
    .bind(i64::try_from(from.global_position).unwrap_or(i64::MAX))
    .bind(to.transaction_id.to_string())
    .bind(i64::try_from(to.global_position).unwrap_or(i64::MAX))
    .bind(count)
    .bind(verified)
    .execute(executor)
    .await?
    .rows_affected();
    Ok(moved == 1)
}

/// Applies the events after `live.checkpoint` and moves the checkpoint, in one
/// transaction whose last statement moves the checkpoint only if nobody else moved it and
/// nothing is missing before the batch (see [`advance`]); otherwise it rolls back.
/// `verified` batches come from the event store (contiguous by construction). When the
/// event store is another database (`separate_log`), the check that nothing is missing
/// runs there first, in its own statement: the log up to the batch's last event is
/// committed and immutable, so its answer cannot change before this transaction commits.
pub async fn commit_batch(
    pool: &PgPool,
    separate_log: Option<&PgPool>,
    kind: Kind,
    live: &mut Live,
    events: &[RecordedEvent],
    verified: bool,
) -> Result<Committed, ProjectionError> {
    // In reading order, without anything at or below the checkpoint or repeated.
    let mut fresh: Vec<&RecordedEvent> = Vec::with_capacity(events.len());
    let mut last = live.checkpoint;
    for event in events {
        if event.checkpoint() > last {
            last = event.checkpoint();
            fresh.push(event);
        }
    }
    if fresh.is_empty() {
        return Ok(Committed::Skipped);
    }
    let (from, generation) = (live.checkpoint, live.generation);
    let verified = match separate_log {
        Some(log) if !verified => contiguous(log, from, last, fresh.len()).await?,
        _ => verified,
    };
    let (moved, changed) = if !verified && separate_log.is_some() {
        (false, 0)
    } else if kind.concerns(&fresh) {
        let mut tx = pool.begin().await?;
        let changed = kind.apply(&mut tx, generation, &fresh).await?;
        let moved = advance(&mut *tx, kind, generation, from, last, fresh.len(), verified).await?;
        if moved {
            tx.commit().await?;
        }
        (moved, changed)
    } else {
        (
            advance(pool, kind, generation, from, last, fresh.len(), verified).await?,
            0,
        )
    };
    if moved {
        live.checkpoint = last;
        return Ok(Committed::Applied(changed));
    }
    let mut conn = pool.acquire().await?;
    let stored = load(&mut conn, kind, false).await?;
    if stored != *live {
        *live = stored;
        return Ok(Committed::Resync);
    }
    Ok(Committed::Gap)
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
