//! One worker per replica for all projections. Workers compete for the projections'
//! session advisory locks (all of them, in one order); the leader catches up from the
//! event store, then applies the live event stream from one durable JetStream consumer
//! (one cumulative ack per chunk) in batches — each event delivered, verified and
//! decoded once, and each chunk applied to every projection in one transaction that
//! also moves every projection's own checkpoint row — and runs requested rebuilds.
//!
//! Correctness never rests on JetStream or on leadership: every batch is applied in a
//! transaction that drops, per projection, what is at or below its checkpoint and commits
//! only if each checkpoint row still holds the batch's starting point and nothing is
//! missing in between (otherwise the missing events are read from Postgres, the source of
//! truth). So a redelivery, a duplicate, a message lost to stream limits or two workers
//! that both think they lead can neither skip nor double-apply an event.
//!
//! A projection whose rebuild is in its last stretch (holding its [`Live`]) is left out
//! of the live batches meanwhile, so it blocks none of the others; once swapped in, the
//! next batch finds it behind (or ahead) and the shared catch-up reads the log from the
//! earliest checkpoint, each projection taking only what follows its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use flexcore_contracts::{envelope, subjects, EventEnvelope};
use flexcore_eventstore::RecordedEvent;
use flexcore_security::{Role, Signed};
use flexcore_telemetry::propagation;
use futures::StreamExt;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;

use crate::error::ProjectionError;
use crate::positions::{announce, Positions};
use crate::projection::Kind;
use crate::rebuild;
use crate::store::{self, Committed, Live};

/// What every worker shares.
#[derive(Clone)]
pub struct Shared {
    /// The read models' database (leadership locks, checkpoints, rows).
    pub pool: PgPool,
    /// The event store when it is another database than `pool` (read-only); see
    /// [`crate::Databases`].
    pub separate_log: Option<PgPool>,
    /// NATS.
    pub nats: async_nats::Client,
    /// This process's view of every projection's checkpoint.
    pub positions: Arc<Positions>,
    /// Tuning.
    pub settings: flexcore_config::ProjectionSettings,
    /// This replica's identity: signs position announcements.
    pub identity: flexcore_security::Identity,
    /// The identities file: an event message counts only if the command service signed it.
    pub trust: flexcore_security::Trust,
    /// Event messages already verified (a redelivered message is not checked again).
    pub verified: Arc<flexcore_security::VerifiedCache>,
    /// Set when the pipelines' derived columns may be out of date as a whole (a rebuild
    /// swapped in one of the models they come from, or a batch was applied while the
    /// pipelines model was held): the leader recomputes them all within a second.
    pub derived_stale: Arc<AtomicBool>,
}

impl Shared {
    /// The event store, from which catch-up and rebuilds read the log.
    pub fn log(&self) -> &PgPool {
        self.separate_log.as_ref().unwrap_or(&self.pool)
    }
}

/// How many verified event messages [`Shared::verified`] remembers: far more than the
/// views can drift apart by within one replica.
pub const VERIFIED_CACHE: usize = 65_536;

/// The durable JetStream consumer of the one worker that applies every projection.
/// Named like the audit projection's consumer of old (the projection identity may use
/// only [`flexcore_security::permissions::PROJECTION_CONSUMERS`]): the audit view
/// receives every event anyway. The other four are removed when found.
pub const DURABLE: &str = "projection-audit";

/// Each projection's [`Live`], behind its own lock: the worker applies live batches to
/// every projection whose lock it gets at once; a rebuild holds its projection's lock
/// for the last stretch and the swap, and that projection catches up afterwards.
pub type Lives = Vec<(Kind, Arc<Mutex<Live>>)>;

/// Runs this replica's projection worker until `shutdown`: competes for leadership of
/// all projections and leads while it holds it, starting over after any error.
pub async fn run(shared: Shared, shutdown: CancellationToken) {
    let db = (*shared.pool.connect_options()).clone();
    while !shutdown.is_cancelled() {
        if let Err(error) = lead(&shared, &db, &shutdown).await {
            tracing::warn!(%error, "projection worker stopped; retrying");
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(shared.settings.leader_retry) => {}
        }
    }
}

/// Takes every projection's leader lock (in one order, so two replicas cannot split
/// them); false, holding none, when another replica holds any of them.
async fn try_lead(lock: &mut sqlx::PgConnection) -> Result<bool, ProjectionError> {
    for kind in Kind::ALL {
        let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(kind.lock_key())
            .fetch_one(&mut *lock)
            .await?;
        if !leader {
            sqlx::query("SELECT pg_advisory_unlock_all()")
                .execute(&mut *lock)
                .await?;
            return Ok(false);
        }
    }
    Ok(true)
}

async fn lead(shared: &Shared, db: &PgConnectOptions, shutdown: &CancellationToken) -> Result<(), ProjectionError> {
    let mut lock = db
        .clone()
        .application_name("flexcore-projection-leader")
        .connect()
        .await?;
    loop {
        if try_lead(&mut lock).await? {
            break;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(shared.settings.leader_retry) => {}
        }
        lock.ping().await?;
    }
    // One line per projection (operators and the fault tests follow each one's leader).
    for kind in Kind::ALL {
        tracing::info!(projection = kind.name(), "projection leadership acquired");
    }
    // Whatever the last leader left undone (or a version without them never did).
    shared.derived_stale.store(true, Ordering::Relaxed);
    // Rebuilds the last leader left running are taken over first (a run of its that
    // still goes on may swap in before: the models are loaded after).
    for kind in Kind::ALL {
        rebuild::resume_interrupted(&shared.pool, kind).await?;
    }
    let mut lives: Lives = Vec::with_capacity(Kind::ALL.len());
    let mut conn = shared.pool.acquire().await?;
    for kind in Kind::ALL {
        lives.push((kind, Arc::new(Mutex::new(store::load(&mut conn, kind, false).await?))));
    }
    drop(conn);

    let js = jetstream::new(shared.nats.clone());
    let Some(stream) = flexcore_service::streams::wait_for(&js, subjects::EVENTS_STREAM, shutdown).await else {
        return Ok(());
    };
    let config = consumer::pull::Config {
        durable_name: Some(DURABLE.to_owned()),
        description: Some("flexcore-projection: every read model".to_owned()),
        // Older events come from Postgres on catch-up; the stream only feeds the tail.
        deliver_policy: consumer::DeliverPolicy::New,
        // One cumulative acknowledgement per applied chunk. Redelivery is no safety net
        // here: what a crashed leader had received is found missing by the next batch's
        // contiguity check and read from Postgres.
        ack_policy: consumer::AckPolicy::All,
        max_ack_pending: 100_000,
        ..Default::default()
    };
    // A consumer left by an older version with another ack policy is replaced, and the
    // per-projection consumers of older versions are removed (nobody reads them).
    if let Ok(mut existing) = stream.get_consumer::<consumer::pull::Config>(DURABLE).await {
        let info = existing.info().await.map_err(ProjectionError::nats)?;
        if info.config.ack_policy != consumer::AckPolicy::All {
            stream.delete_consumer(DURABLE).await.map_err(ProjectionError::nats)?;
        }
    }
    for kind in Kind::ALL {
        let old = format!("projection-{}", kind.name());
        if old != DURABLE && stream.get_consumer::<consumer::pull::Config>(&old).await.is_ok() {
            if let Err(error) = stream.delete_consumer(&old).await {
                tracing::debug!(consumer = old, %error, "old projection consumer not removed");
            }
        }
    }
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(DURABLE, config)
        .await
        .map_err(ProjectionError::nats)?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(shared.settings.batch_size.max(1))
        .messages()
        .await
        .map_err(ProjectionError::nats)?
        .ready_chunks(shared.settings.batch_size.max(1));

    {
        let mut guards = lock_all(&lives).await;
        catch_up(shared, &mut entries(&mut guards)).await?;
    }

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rebuilding: Vec<(Kind, tokio::task::JoinHandle<()>)> = Vec::new();
    let stop_rebuilds = CancellationToken::new();
    let result = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            chunk = messages.next() => {
                let Some(chunk) = chunk else { break Err(ProjectionError::nats("the event consumer ended")) };
                if let Err(error) = apply_chunk(shared, &lives, chunk).await {
                    break Err(error);
                }
            }
            _ = tick.tick() => {
                if let Err(error) = lock.ping().await {
                    break Err(error.into());
                }
                if let Err(error) = refresh_derived(shared, &lives).await {
                    break Err(error);
                }
                rebuilding.retain(|(_, task)| !task.is_finished());
                let mut failed = None;
                for (kind, live) in &lives {
                    if rebuilding.iter().any(|(k, _)| k == kind) {
                        continue;
                    }
                    match rebuild::due(&shared.pool, *kind).await {
                        Ok(true) => rebuilding.push((
                            *kind,
                            tokio::spawn(rebuild::run(*kind, shared.clone(), live.clone(), stop_rebuilds.clone())),
                        )),
                        Ok(false) => {}
                        Err(error) => failed = Some(error),
                    }
                }
                if let Some(error) = failed {
                    break Err(error);
                }
            }
        }
    };
    // Rebuilds stop between two batches, and are awaited before the leader lock is let go
    // (unless its connection died and took the lock with it: then a rebuild's writes are
    // fenced by its record, `rebuild::Record`). Not aborted: a task aborted while its
    // `BEGIN` is in flight hands its pooled connection back inside a transaction.
    stop_rebuilds.cancel();
    for (kind, task) in rebuilding {
        if let Err(error) = task.await {
            tracing::error!(projection = kind.name(), %error, "rebuild task failed");
        }
    }
    result
}

/// Recomputes every pipeline's derived columns ([`crate::derived`]) if they are marked
/// stale and no rebuild holds the pipelines model (else it stays marked, for the next
/// tick).
async fn refresh_derived(shared: &Shared, lives: &Lives) -> Result<(), ProjectionError> {
    if !shared.derived_stale.swap(false, Ordering::Relaxed) {
        return Ok(());
    }
    let held = lives
        .iter()
        .find(|(kind, _)| *kind == Kind::Pipelines)
        .and_then(|(_, live)| live.clone().try_lock_owned().ok());
    let Some(pipelines) = held else {
        shared.derived_stale.store(true, Ordering::Relaxed);
        return Ok(());
    };
    let refreshed = async {
        let mut tx = shared.pool.begin().await?;
        let written = crate::derived::refresh_all(&mut tx, pipelines.generation).await?;
        tx.commit().await?;
        Ok::<_, ProjectionError>(written)
    }
    .await;
    match refreshed {
        Ok(written) => {
            shared.positions.changed_in_place();
            tracing::debug!(written, "pipelines' derived columns recomputed");
            Ok(())
        }
        Err(error) => {
            shared.derived_stale.store(true, Ordering::Relaxed);
            Err(error)
        }
    }
}

type Guards = Vec<(Kind, OwnedMutexGuard<Live>)>;

/// Every projection's lock, waiting for each.
async fn lock_all(lives: &Lives) -> Guards {
    let mut guards = Vec::with_capacity(lives.len());
    for (kind, live) in lives {
        guards.push((*kind, live.clone().lock_owned().await));
    }
    guards
}

fn entries(guards: &mut Guards) -> Vec<(Kind, &mut Live)> {
    guards.iter_mut().map(|(kind, guard)| (*kind, &mut **guard)).collect()
}

/// Applies the event store from the projections' checkpoints (the earliest of them on)
/// up to the transaction horizon, every projection in the same transactions; returns how
/// many events were read.
pub async fn catch_up(shared: &Shared, projections: &mut [(Kind, &mut Live)]) -> Result<u64, ProjectionError> {
    let mut total = 0;
    loop {
        let Some(after) = projections.iter().map(|(_, live)| live.checkpoint).min() else {
            return Ok(total);
        };
        let batch = flexcore_eventstore::read_all_with(shared.log(), after, shared.settings.replay_batch_size).await?;
        if batch.is_empty() {
            return Ok(total);
        }
        let n = batch.len() as u64;
        match store::commit_all(&shared.pool, None, projections, &batch, true, &shared.derived_stale).await? {
            Committed::Applied(_) | Committed::Skipped => {
                total += n;
                announce_all(shared, projections).await;
            }
            Committed::Resync | Committed::Gap => {}
        }
    }
}

async fn announce_all(shared: &Shared, projections: &[(Kind, &mut Live)]) {
    for (kind, live) in projections {
        shared.positions.advance(*kind, live.checkpoint);
        announce(&shared.nats, &shared.identity, *kind, live.checkpoint).await;
    }
}

async fn apply_chunk(
    shared: &Shared,
    lives: &Lives,
    chunk: Vec<Result<jetstream::Message, consumer::pull::MessagesError>>,
) -> Result<(), ProjectionError> {
    let mut events = Vec::with_capacity(chunk.len());
    let mut last = None;
    // While spans are exported: one per traced event and projection it concerns, open
    // until the batch is committed.
    let mut spans = Vec::new();
    let messages = chunk
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProjectionError::nats)?;
    // The chunk's signatures are checked together (one batch equation).
    let signed: Vec<Signed<'_>> = messages.iter().map(|m| Signed::from(&m.message)).collect();
    let verdicts = shared
        .trust
        .verify_all(&signed, &[Role::Command], None, Some(&shared.verified));
    for (message, verdict) in messages.into_iter().zip(verdicts) {
        // Only what the relay published: anything else on the stream (published despite
        // the permissions) is skipped like an undecodable message, and the event store
        // fills the position it claimed.
        if let Err(why) = verdict {
            tracing::warn!(subject = %message.subject, %why, "event message not signed by the command service; ignored");
            last = Some(message);
            continue;
        }
        match decode(&message) {
            Ok(event) => {
                if propagation::carried(message.headers.as_ref()) {
                    for kind in Kind::ALL {
                        if kind.concerns(&[&event]) {
                            spans.push(apply_span(kind, &event, &message));
                        }
                    }
                }
                events.push(event);
            }
            // The contiguity check notices the hole and the event store fills it.
            Err(why) => {
                tracing::warn!(subject = %message.subject, why, "undecodable event message")
            }
        }
        last = Some(message);
    }
    {
        // Every projection not held by a rebuild's last stretch; one held is skipped (its
        // checkpoint stays behind) and caught up from the event store with a later chunk.
        let mut guards: Guards = lives
            .iter()
            .filter_map(|(kind, live)| Some((*kind, live.clone().try_lock_owned().ok()?)))
            .collect();
        let mut projections = entries(&mut guards);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match store::commit_all(
                &shared.pool,
                shared.separate_log.as_ref(),
                &mut projections,
                &events,
                false,
                &shared.derived_stale,
            )
            .await?
            {
                Committed::Applied(_) | Committed::Skipped => break,
                Committed::Gap | Committed::Resync if attempts < 4 => {
                    catch_up(shared, &mut projections).await?;
                }
                other => {
                    return Err(ProjectionError::Invariant(format!(
                        "batch still not applicable after catching up ({other:?})"
                    )))
                }
            }
        }
        announce_all(shared, &projections).await;
    }
    drop(spans);
    // Acknowledges the whole chunk (AckPolicy::All).
    if let Some(message) = last {
        if let Err(error) = message.ack().await {
            tracing::debug!(%error, "ack failed; the chunk will be redelivered and skipped");
        }
    }
    Ok(())
}

/// The `projection.apply` span of one event: a child of the span that published it (the
/// message's `traceparent`).
fn apply_span(kind: Kind, event: &RecordedEvent, message: &jetstream::Message) -> tracing::Span {
    let span = tracing::info_span!(
        "projection.apply",
        projection = kind.name(),
        event_type = %event.event_type,
        aggregate_id = %event.aggregate_id,
        global_position = event.global_position,
    );
    propagation::set_parent(&span, message.headers.as_ref());
    span
}

/// An event message as a [`RecordedEvent`].
pub fn decode(message: &jetstream::Message) -> Result<RecordedEvent, String> {
    let envelope: EventEnvelope = serde_json::from_slice(&message.payload).map_err(|e| e.to_string())?;
    let transaction_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get(envelope::HEADER_TRANSACTION_ID))
        .and_then(|v| v.as_str().parse::<u64>().ok())
        .ok_or("no Flexcore-Transaction-Id header")?;
    Ok(RecordedEvent {
        global_position: envelope.global_position,
        transaction_id,
        event_id: envelope.event_id,
        aggregate_type: envelope.aggregate_type,
        aggregate_id: envelope.aggregate_id,
        version: envelope.version,
        event_type: envelope.event_type,
        schema_version: envelope.schema_version,
        data: envelope.data,
        metadata: envelope.metadata,
        recorded_at: envelope.recorded_at,
    })
}
