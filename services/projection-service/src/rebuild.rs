//! Blue/green rebuilds: replay a projection from the Postgres event store (not JetStream,
//! whose retention may be shorter) into the tables of a new generation while the current
//! one keeps serving, then — with the live worker paused for the last stretch — move the
//! checkpoint and re-point the views in one transaction, and drop the old tables.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use flexcore_contracts::views::RebuildStatus;
use flexcore_eventstore::{Checkpoint, RecordedEvent};
use sqlx::types::Json;
use sqlx::Connection as _;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use crate::error::ProjectionError;
use crate::positions::announce;
use crate::projection::{Kind, AUDIT};
use crate::store::{self, Live};
use crate::tables;
use crate::worker::Shared;

/// Whether a rebuild of `kind` is due to be run by a leader that runs none of `kind`:
/// one is requested, or one is left `running` that no run carries on (a run that failed
/// and could not record it), which is requested again first ([`resume_interrupted`]).
pub async fn due(pool: &PgPool, kind: Kind) -> Result<bool, ProjectionError> {
    let state = store::rebuild_status(pool, kind).await?.map(|s| s.state);
    match state.as_deref() {
        Some("requested") => Ok(true),
        Some("running") => {
            resume_interrupted(pool, kind).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// A rebuild left `running` by a leader that died (or by a run that could not record its
/// failure) is requested again (its half-built tables are dropped when it restarts). Done
/// holding the rebuild's lock alone, on the row as it is then: a batch of the old run
/// still in flight ends first, and the run finds the record changed at its next step.
pub async fn resume_interrupted(pool: &PgPool, kind: Kind) -> Result<(), ProjectionError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(kind.rebuild_lock_key())
        .execute(&mut *tx)
        .await?;
    let status: Option<Json<RebuildStatus>> = sqlx::query_scalar(
        "SELECT rebuild FROM read.projections WHERE name = $1 AND rebuild->>'state' = 'running' FOR UPDATE",
    )
    .bind(kind.name())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(Json(mut status)) = status {
        tracing::warn!(
            projection = kind.name(),
            "restarting a rebuild no run carries on (interrupted by a leader change, or a failure not recorded)"
        );
        status.state = "requested".into();
        status.error = Some("interrupted by a leader change; restarted".into());
        store::save_rebuild_status(&mut tx, kind, &status).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Runs the requested rebuild of `kind`; failures are recorded in its status.
///
/// `stop` ends it between two batches (never inside a statement: a task aborted while
/// `BEGIN` is in flight could hand its pooled connection back inside a transaction); it
/// then stays `running`, and the next leader restarts it ([`resume_interrupted`]). A run
/// whose leader lost its lock without noticing at once is fenced off by its [`Record`].
pub async fn run(kind: Kind, shared: Shared, live: Arc<Mutex<Live>>, stop: CancellationToken) {
    let Ok(Some(mut status)) = store::rebuild_status(&shared.pool, kind).await else {
        return;
    };
    let from = live.lock().await.generation;
    let mut record = None;
    let result = rebuild(kind, &shared, &live, &mut status, &mut record, &stop).await;
    match result {
        Ok(()) => {}
        // An error once the leader stopped is the stop's doing (its connections may be
        // gone): the next leader restarts the rebuild, and owns what it wrote.
        Err(error) if stop.is_cancelled() || matches!(error, ProjectionError::Stopped) => {
            tracing::info!(
                projection = kind.name(),
                %error,
                "rebuild stopped with the leadership; the next leader restarts it"
            );
        }
        Err(error) => {
            tracing::error!(projection = kind.name(), %error, "rebuild failed");
            status.state = "failed".into();
            status.error = Some(error.to_string());
            status.finished_at = Some(Utc::now());
            if let Ok(mut conn) = shared.pool.acquire().await {
                let recorded = match &mut record {
                    Some(record) => record.write(&mut conn, &status).await,
                    None => Record::claim(&mut conn, kind, &status).await.map(drop),
                };
                // Its tables are dropped only while the rebuild is still this run's.
                if recorded.is_ok() {
                    if let Some(generation) = status.generation.filter(|g| *g != from) {
                        let _ = tables::drop_generation(&mut conn, kind.table(), generation).await;
                    }
                }
            }
        }
    }
}

/// A rebuild's status as this run last wrote it. Every later write is a compare-and-set
/// on the whole document, and every transaction that writes tables checks the document
/// under the rebuild's advisory lock held shared ([`Record::hold`]): a run whose leader
/// lost its lock (a dead connection is noticed only at the next ping) stops at its next
/// write or batch once the next leader has taken the rebuild over ([`resume_interrupted`]
/// rewrites the document holding that lock alone), instead of writing into or swapping
/// in tables of its own while the next leader builds its own.
pub(crate) struct Record {
    kind: Kind,
    written: RebuildStatus,
}

impl Record {
    /// Writes `status` over the `requested` one this run was started for.
    async fn claim(conn: &mut PgConnection, kind: Kind, status: &RebuildStatus) -> Result<Self, ProjectionError> {
        let claimed =
            sqlx::query("UPDATE read.projections SET rebuild = $2 WHERE name = $1 AND rebuild->>'state' = 'requested'")
                .bind(kind.name())
                .bind(Json(status))
                .execute(&mut *conn)
                .await?
                .rows_affected();
        if claimed == 0 {
            return Err(ProjectionError::Stopped);
        }
        Ok(Self {
            kind,
            written: status.clone(),
        })
    }

    /// Writes `status` (committed with `conn`'s statement).
    async fn write(&mut self, conn: &mut PgConnection, status: &RebuildStatus) -> Result<(), ProjectionError> {
        self.write_in(conn, status).await?;
        self.written = status.clone();
        Ok(())
    }

    /// Writes `status` in `conn`'s transaction; the caller calls [`Record::committed`]
    /// once it commits.
    async fn write_in(&self, conn: &mut PgConnection, status: &RebuildStatus) -> Result<(), ProjectionError> {
        let written = sqlx::query("UPDATE read.projections SET rebuild = $2 WHERE name = $1 AND rebuild = $3")
            .bind(self.kind.name())
            .bind(Json(status))
            .bind(Json(&self.written))
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if written == 0 {
            return Err(ProjectionError::Stopped);
        }
        Ok(())
    }

    fn committed(&mut self, status: &RebuildStatus) {
        self.written = status.clone();
    }

    /// Checks that the rebuild is still this run's and keeps a takeover out until `conn`'s
    /// transaction ends: the rebuild's lock shared (the live worker, which writes the same
    /// row, takes no part in it), then the row as this run wrote it.
    async fn hold(&self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        // Two statements, read committed: the check's snapshot must be taken after the
        // lock is granted (one statement's snapshot predates its waiting for the lock,
        // and a repeatable-read transaction's its first statement).
        sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .execute(&mut *conn)
            .await?;
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(self.kind.rebuild_lock_key())
            .execute(&mut *conn)
            .await?;
        let ours: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM read.projections WHERE name = $1 AND rebuild = $2)")
                .bind(self.kind.name())
                .bind(Json(&self.written))
                .fetch_one(&mut *conn)
                .await?;
        if ours {
            Ok(())
        } else {
            Err(ProjectionError::Stopped)
        }
    }
}

async fn rebuild(
    kind: Kind,
    shared: &Shared,
    live: &Mutex<Live>,
    status: &mut RebuildStatus,
    record: &mut Option<Record>,
    stop: &CancellationToken,
) -> Result<(), ProjectionError> {
    let spec = kind.table();
    let old = live.lock().await.generation;
    // Past any generation an earlier run built: a run taken over may still be writing
    // its tables, which must not be this run's.
    let earlier = status.generation.filter(|g| *g > old);
    let generation = old.max(earlier.unwrap_or(0)) + 1;
    let target: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(shared.log())
        .await?;
    let started = Instant::now();
    status.state = "running".into();
    status.generation = Some(generation);
    status.processed = 0;
    status.target = u64::try_from(target).unwrap_or_default();
    status.started_at = Some(Utc::now());
    status.error = None;
    let mut conn = shared.pool.acquire().await?;
    let record = record.insert(Record::claim(&mut conn, kind, status).await?);
    tracing::info!(projection = kind.name(), generation, target, "rebuild started");
    {
        let mut tx = conn.begin().await?;
        record.hold(&mut tx).await?;
        if let Some(earlier) = earlier {
            // What a run interrupted or failed left (its failure path may not have run).
            tables::drop_generation(&mut tx, spec, earlier).await?;
        }
        tables::create_generation(&mut tx, spec, generation, false).await?;
        tx.commit().await?;
    }

    // The log is read one batch ahead of the one being applied: a task reads (and
    // decodes) the next batch from the event store while this one is written.
    let mut checkpoint = Checkpoint::default();
    let mut last_report = Instant::now();
    let batch_size = shared.settings.replay_batch_size;
    let mut batches = read_ahead(shared.log().clone(), checkpoint, batch_size);
    loop {
        let batch = tokio::select! {
            biased;
            () = stop.cancelled() => return Err(ProjectionError::Stopped),
            batch = batches.recv() => match batch {
                Some(batch) => batch?,
                None => break,
            },
        };
        replay(kind, shared, generation, &batch, &mut checkpoint, record).await?;
        status.processed += batch.len() as u64;
        if last_report.elapsed().as_secs() >= 1 {
            last_report = Instant::now();
            status.events_per_second = Some(rate(status.processed, started));
            record.write(&mut conn, status).await?;
        }
    }
    let replayed = started.elapsed();
    if stop.is_cancelled() {
        return Err(ProjectionError::Stopped);
    }
    tables::index_generation_in_parallel(&shared.pool, spec, generation, 2).await?;
    let indexed = started.elapsed();

    // The last stretch with the live worker paused, then the swap.
    let mut live = live.lock().await;
    loop {
        if stop.is_cancelled() {
            return Err(ProjectionError::Stopped);
        }
        let batch = flexcore_eventstore::read_all_with(shared.log(), checkpoint, batch_size).await?;
        if batch.is_empty() {
            if checkpoint >= live.checkpoint {
                break;
            }
            return Err(ProjectionError::Invariant(format!(
                "the replay ended at {checkpoint:?}, behind the live checkpoint {:?}",
                live.checkpoint
            )));
        }
        replay(kind, shared, generation, &batch, &mut checkpoint, record).await?;
        status.processed += batch.len() as u64;
    }
    let mut tx = shared.pool.begin().await?;
    // The rebuild's lock, then the row (the order of `resume_interrupted`).
    record.hold(&mut tx).await?;
    let stored = store::load(&mut tx, kind, true).await?;
    if stored.generation != old {
        return Err(ProjectionError::Invariant(format!(
            "generation moved from {old} to {} during the rebuild",
            stored.generation
        )));
    }
    status.state = "done".into();
    status.finished_at = Some(Utc::now());
    status.events_per_second = Some(rate(status.processed, started));
    sqlx::query(
        "UPDATE read.projections SET generation = $2, transaction_id = $3::text::xid8, global_position = $4, \
         events_applied = $5, layout = $6, updated_at = now() WHERE name = $1",
    )
    .bind(kind.name())
    .bind(i32::try_from(generation).unwrap_or(i32::MAX))
    .bind(checkpoint.transaction_id.to_string())
    .bind(i64::try_from(checkpoint.global_position).unwrap_or(i64::MAX))
    .bind(i64::try_from(status.processed).unwrap_or(i64::MAX))
    .bind(spec.layout())
    .execute(&mut *tx)
    .await?;
    record.write_in(&mut tx, status).await?;
    if kind == Kind::Pipelines {
        // The rebuilt rows have their derived columns still to compute.
        crate::derived::refresh_all(&mut tx, generation).await?;
    }
    tables::swap_views(&mut tx, spec, generation).await?;
    tx.commit().await?;
    record.committed(status);
    *live = Live { generation, checkpoint };
    drop(live);
    if matches!(kind, Kind::Runs | Kind::Schedules) {
        // A new fold of runs or schedules may change what pipelines show: the worker
        // recomputes them all. (A pipelines swap filled its own above; a batch applied
        // while it held the model marked them stale itself, in `store::commit_all`.)
        shared.derived_stale.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    shared.positions.changed_in_place();
    shared.positions.advance(kind, checkpoint);
    announce(&shared.nats, &shared.identity, kind, checkpoint).await;
    tracing::info!(
        projection = kind.name(),
        generation,
        events = status.processed,
        events_per_second = status.events_per_second,
        replay_seconds = replayed.as_secs_f64(),
        index_seconds = (indexed - replayed).as_secs_f64(),
        last_stretch_seconds = (started.elapsed() - indexed).as_secs_f64(),
        "rebuild swapped in"
    );
    // Swapped in: a failure from here on is no failure of the rebuild.
    if let Err(error) = tables::drop_generation(&mut conn, spec, old).await {
        tracing::warn!(projection = kind.name(), generation = old, %error, "the old generation was not dropped");
    }
    Ok(())
}

async fn replay(
    kind: Kind,
    shared: &Shared,
    generation: u32,
    batch: &[RecordedEvent],
    checkpoint: &mut Checkpoint,
    record: &Record,
) -> Result<(), ProjectionError> {
    let Some(last) = batch.last() else { return Ok(()) };
    let mut tx = shared.pool.begin().await?;
    record.hold(&mut tx).await?;
    if kind == Kind::Audit {
        copy_audit(&mut tx, generation, batch).await?;
    } else {
        let events: Vec<&RecordedEvent> = batch.iter().collect();
        kind.apply(&mut tx, generation, &events).await?;
    }
    tx.commit().await?;
    *checkpoint = last.checkpoint();
    Ok(())
}

/// Reads the log after `from` in batches of `batch_size` on a task of its own, at most
/// two batches ahead of the receiver; the channel closes after the first short batch
/// (the end of the log as the reader saw it) or after an error. Dropping the receiver
/// stops the task.
fn read_ahead(
    log: PgPool,
    from: Checkpoint,
    batch_size: i64,
) -> mpsc::Receiver<Result<Vec<RecordedEvent>, ProjectionError>> {
    let (sender, receiver) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut after = from;
        loop {
            let batch = flexcore_eventstore::read_all_with(&log, after, batch_size)
                .await
                .map_err(ProjectionError::from);
            let more = match &batch {
                Ok(events) => {
                    if let Some(last) = events.last() {
                        after = last.checkpoint();
                    }
                    i64::try_from(events.len()).unwrap_or(i64::MAX) >= batch_size
                }
                Err(_) => false,
            };
            let empty = batch.as_ref().is_ok_and(Vec::is_empty);
            if (!empty && sender.send(batch).await.is_err()) || !more {
                return;
            }
        }
    });
    receiver
}

/// Writes a batch to a generation's audit table with `COPY` (text format): a rebuild's
/// batches are contiguous and new to the shadow table, so there is nothing to skip, and
/// `COPY` spares the server the JSON array the live path sends. The rows are the ones
/// the live path writes (the same columns, the envelope's JSON text as `doc`).
async fn copy_audit(conn: &mut PgConnection, generation: u32, batch: &[RecordedEvent]) -> Result<u64, ProjectionError> {
    if batch.is_empty() {
        return Ok(0);
    }
    let data = audit_copy_text(batch)?;
    let columns = AUDIT
        .columns
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ");
    let mut copy = conn
        .copy_in_raw(&format!("COPY {} ({columns}) FROM STDIN", AUDIT.table(generation)))
        .await?;
    if let Err(error) = copy.send(data).await {
        let _ = copy.abort("the rebuild failed to send its rows").await;
        return Err(error.into());
    }
    Ok(copy.finish().await?)
}

/// The `COPY … FROM STDIN` text of audit rows: columns in [`AUDIT`] order, tab-separated,
/// one row a line, with backslash, tab, newline and carriage return escaped.
fn audit_copy_text(batch: &[RecordedEvent]) -> Result<Vec<u8>, ProjectionError> {
    use std::io::Write as _;
    let mut out: Vec<u8> = Vec::with_capacity(batch.len() * 768);
    let mut doc: Vec<u8> = Vec::with_capacity(1024);
    for e in batch {
        write!(out, "{}\t{}\t{}\t", e.global_position, e.transaction_id, e.event_id).map_err(io)?;
        escape_copy(&mut out, e.aggregate_type.as_bytes());
        write!(out, "\t{}\t{}\t", e.aggregate_id, e.version).map_err(io)?;
        escape_copy(&mut out, e.event_type.as_bytes());
        write!(
            out,
            "\t{}\t",
            e.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        )
        .map_err(io)?;
        doc.clear();
        serde_json::to_writer(&mut doc, &e.to_envelope())?;
        escape_copy(&mut out, &doc);
        out.push(b'\n');
    }
    Ok(out)
}

fn io(error: std::io::Error) -> ProjectionError {
    ProjectionError::Invariant(format!("writing COPY rows: {error}"))
}

/// Appends `text` to a `COPY` text-format field.
fn escape_copy(out: &mut Vec<u8>, text: &[u8]) {
    for &b in text {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

fn rate(events: u64, since: Instant) -> f64 {
    let secs = since.elapsed().as_secs_f64();
    if secs > 0.0 {
        (events as f64 / secs).round()
    } else {
        0.0
    }
}
