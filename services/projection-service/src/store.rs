//! `read.projections`: each projection's generation and checkpoint, and the transaction
//! that applies a batch and moves the checkpoint together (exactly-once effects).

use chrono::Utc;
use flexcore_contracts::views::RebuildStatus;
use flexcore_eventstore::{Checkpoint, RecordedEvent};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

use crate::derived;
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
            .all_columns()
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

/// Whether the log holds exactly `count` events in `(from, to]`: the check of [`commit_all`]
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

/// Applies the events after `live.checkpoint` and moves the checkpoint, in one
/// transaction (see [`commit_all`], of which this is the one-projection case).
pub async fn commit_batch(
    pool: &PgPool,
    separate_log: Option<&PgPool>,
    kind: Kind,
    live: &mut Live,
    events: &[RecordedEvent],
    verified: bool,
) -> Result<Committed, ProjectionError> {
    let stale = std::sync::atomic::AtomicBool::new(false);
    commit_all(pool, separate_log, &mut [(kind, live)], events, verified, &stale).await
}

/// Applies `events` (in reading order) to every projection of `projections`, each from
/// its own checkpoint on (an event at or below a projection's checkpoint is dropped for
/// it), and moves their checkpoints, all in one transaction whose first statement moves
/// every checkpoint only if nobody else moved it and — unless `verified` — the log holds
/// exactly the events applied after it (nothing is missing before the batch); otherwise
/// the transaction rolls back, nothing is applied and nothing moves. `verified` batches come from the event
/// store (contiguous by construction). When the event store is another database
/// (`separate_log`), the check that nothing is missing runs there first: the log up to
/// the batch's last event is committed and immutable, so its answer cannot change before
/// this transaction commits.
///
/// One delivery, decode and transaction per batch for all projections; each keeps its
/// own row in `read.projections` (generation and checkpoint), so exactly-once effects,
/// rebuilds and catch-up stay per projection.
///
/// The same transaction recomputes the derived columns of the pipelines the batch
/// touched ([`derived::refresh`]) when the pipelines projection is one of
/// `projections`; when it is not (a rebuild holds it), `derived_stale` is set instead,
/// for the worker to recompute them all once it can.
pub async fn commit_all(
    pool: &PgPool,
    separate_log: Option<&PgPool>,
    projections: &mut [(Kind, &mut Live)],
    events: &[RecordedEvent],
    verified: bool,
    derived_stale: &std::sync::atomic::AtomicBool,
) -> Result<Committed, ProjectionError> {
    // Per projection: in reading order, without anything at or below its checkpoint.
    let mut plans: Vec<(usize, Vec<&RecordedEvent>, Checkpoint)> = Vec::with_capacity(projections.len());
    for (i, (_, live)) in projections.iter().enumerate() {
        let mut fresh: Vec<&RecordedEvent> = Vec::with_capacity(events.len());
        let mut last = live.checkpoint;
        for event in events {
            if event.checkpoint() > last {
                last = event.checkpoint();
                fresh.push(event);
            }
        }
        if !fresh.is_empty() {
            plans.push((i, fresh, last));
        }
    }
    if plans.is_empty() {
        return Ok(Committed::Skipped);
    }
    let mut verified = verified;
    if let (Some(log), false) = (separate_log, verified) {
        // One check per distinct starting point (usually one for all).
        let mut checked: Vec<(Checkpoint, Checkpoint, usize)> = Vec::new();
        for (i, fresh, last) in &plans {
            let key = (projections[*i].1.checkpoint, *last, fresh.len());
            if !checked.contains(&key) {
                if !contiguous(log, key.0, key.1, key.2).await? {
                    return Ok(Committed::Gap);
                }
                checked.push(key);
            }
        }
        verified = true;
    }
    let mut tx = pool.begin().await?;
    let mut names = Vec::with_capacity(plans.len());
    let mut generations = Vec::with_capacity(plans.len());
    let mut from_tx = Vec::with_capacity(plans.len());
    let mut from_pos = Vec::with_capacity(plans.len());
    let mut to_tx = Vec::with_capacity(plans.len());
    let mut to_pos = Vec::with_capacity(plans.len());
    let mut counts = Vec::with_capacity(plans.len());
    for (i, fresh, last) in &plans {
        let (kind, live) = &projections[*i];
        names.push(kind.name());
        generations.push(i32::try_from(live.generation).unwrap_or(i32::MAX));
        from_tx.push(live.checkpoint.transaction_id.to_string());
        from_pos.push(i64::try_from(live.checkpoint.global_position).unwrap_or(i64::MAX));
        to_tx.push(last.transaction_id.to_string());
        to_pos.push(i64::try_from(last.global_position).unwrap_or(i64::MAX));
        counts.push(i64::try_from(fresh.len()).unwrap_or(i64::MAX));
    }
    // Every checkpoint in one statement, first (it is the same transaction): each row
    // moves only if it still is where this batch starts in the caller's generation and
    // the log holds exactly the events applied after it (every event up to the batch's
    // last is committed: the relay read it below the transaction horizon, so the count
    // is exact).
    let moved = sqlx::query(
        "UPDATE read.projections p SET transaction_id = b.to_tx::xid8, global_position = b.to_pos, \
           events_applied = p.events_applied + b.n, updated_at = now() \
         FROM unnest($1::text[], $2::int[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[]) \
           AS b(name, generation, from_tx, from_pos, to_tx, to_pos, n) \
         WHERE p.name = b.name AND p.generation = b.generation \
           AND p.transaction_id = b.from_tx::xid8 AND p.global_position = b.from_pos \
           AND ($8 OR (SELECT count(*) FROM events \
                WHERE (transaction_id, global_position) > (b.from_tx::xid8, b.from_pos) \
                  AND (transaction_id, global_position) <= (b.to_tx::xid8, b.to_pos)) = b.n)",
    )
    .bind(&names)
    .bind(&generations)
    .bind(&from_tx)
    .bind(&from_pos)
    .bind(&to_tx)
    .bind(&to_pos)
    .bind(&counts)
    .bind(verified)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved != plans.len() as u64 {
        tx.rollback().await?;
        return resync(pool, projections).await;
    }
    // Only now, with every checkpoint known to precede the batch, are the events applied:
    // a batch after a hole (e.g. events a rebuild's last stretch held a projection from)
    // may refer to rows the hole would have created, which the projections rightly refuse.
    let mut changed = 0;
    let mut touched = derived::Touched::default();
    for (i, fresh, _) in &plans {
        let (kind, live) = &projections[*i];
        if kind.concerns(fresh) {
            changed += kind.apply(&mut tx, live.generation, fresh).await?;
            touched.add(*kind, fresh);
        }
    }
    if !touched.is_empty() {
        match projections.iter().find(|(kind, _)| *kind == Kind::Pipelines) {
            Some((_, pipelines)) => {
                derived::refresh(&mut tx, pipelines.generation, &touched).await?;
            }
            None => derived_stale.store(true, std::sync::atomic::Ordering::Relaxed),
        }
    }
    tx.commit().await?;
    for (i, _, last) in &plans {
        projections[*i].1.checkpoint = *last;
    }
    Ok(Committed::Applied(changed))
}

/// After a batch found a checkpoint elsewhere than where it started: each projection's
/// stored state is loaded; `Resync` when one differed from the caller's, else `Gap`.
async fn resync(pool: &PgPool, projections: &mut [(Kind, &mut Live)]) -> Result<Committed, ProjectionError> {
    let mut conn = pool.acquire().await?;
    let mut resynced = false;
    for (kind, live) in projections.iter_mut() {
        let stored = load(&mut conn, *kind, false).await?;
        if stored != **live {
            **live = stored;
            resynced = true;
        }
    }
    Ok(if resynced { Committed::Resync } else { Committed::Gap })
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
