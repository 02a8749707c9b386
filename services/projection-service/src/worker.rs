//! One worker per projection per replica. Workers compete for a session advisory lock;
//! the leader catches up from the event store, then applies the live event stream from
//! its durable JetStream consumer (one cumulative ack per chunk) in batches, and runs
//! requested rebuilds.
//!
//! Correctness never rests on JetStream or on leadership: every batch is applied in a
//! transaction that drops what is at or below the checkpoint and commits only if the
//! checkpoint row still holds the batch's starting point and nothing is missing in
//! between (otherwise the missing events are read from Postgres, the source of truth). So a redelivery, a duplicate, a
//! message lost to stream limits or two workers that both think they lead can neither
//! skip nor double-apply an event.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use flexcore_contracts::{envelope, subjects, EventEnvelope};
use flexcore_eventstore::RecordedEvent;
use flexcore_security::Role;
use flexcore_telemetry::propagation;
use futures::StreamExt;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio::sync::Mutex;
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
    /// Event messages already verified, shared by the workers (each view receives every
    /// event: one signature check per event, not one per view).
    pub verified: Arc<flexcore_security::VerifiedCache>,
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

/// Runs the worker of `kind` until `shutdown`: competes for leadership and leads while
/// it holds it, starting over after any error.
pub async fn run(kind: Kind, shared: Shared, shutdown: CancellationToken) {
    let db = (*shared.pool.connect_options()).clone();
    while !shutdown.is_cancelled() {
        if let Err(error) = lead(kind, &shared, &db, &shutdown).await {
            tracing::warn!(projection = kind.name(), %error, "projection worker stopped; retrying");
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(shared.settings.leader_retry) => {}
        }
    }
}

async fn lead(
    kind: Kind,
    shared: &Shared,
    db: &PgConnectOptions,
    shutdown: &CancellationToken,
) -> Result<(), ProjectionError> {
    let mut lock = db
        .clone()
        .application_name("flexcore-projection-leader")
        .connect()
        .await?;
    loop {
        let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(kind.lock_key())
            .fetch_one(&mut lock)
            .await?;
        if leader {
            break;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(shared.settings.leader_retry) => {}
        }
        lock.ping().await?;
    }
    tracing::info!(projection = kind.name(), "projection leadership acquired");
    let mut conn = shared.pool.acquire().await?;
    let live = Arc::new(Mutex::new(store::load(&mut conn, kind, false).await?));
    drop(conn);
    rebuild::resume_interrupted(&shared.pool, kind).await?;

    let js = jetstream::new(shared.nats.clone());
    let Some(stream) = flexcore_service::streams::wait_for(&js, subjects::EVENTS_STREAM, shutdown).await else {
        return Ok(());
    };
    let durable = format!("projection-{}", kind.name());
    let config = consumer::pull::Config {
        durable_name: Some(durable.clone()),
        description: Some(format!("flexcore-projection: the {} read model", kind.name())),
        // Older events come from Postgres on catch-up; the stream only feeds the tail.
        deliver_policy: consumer::DeliverPolicy::New,
        // One cumulative acknowledgement per applied chunk. Redelivery is no safety net
        // here: what a crashed leader had received is found missing by the next batch's
        // contiguity check and read from Postgres.
        ack_policy: consumer::AckPolicy::All,
        max_ack_pending: 100_000,
        ..Default::default()
    };
    // A consumer left by an older version with another ack policy is replaced.
    if let Ok(mut existing) = stream.get_consumer::<consumer::pull::Config>(&durable).await {
        let info = existing.info().await.map_err(ProjectionError::nats)?;
        if info.config.ack_policy != consumer::AckPolicy::All {
            stream.delete_consumer(&durable).await.map_err(ProjectionError::nats)?;
        }
    }
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(&durable, config)
        .await
        .map_err(ProjectionError::nats)?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(shared.settings.batch_size.max(1))
        .messages()
        .await
        .map_err(ProjectionError::nats)?
        .ready_chunks(shared.settings.batch_size.max(1));

    catch_up(kind, shared, &mut *live.lock().await).await?;

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rebuilding: Option<tokio::task::JoinHandle<()>> = None;
    let result = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            chunk = messages.next() => {
                let Some(chunk) = chunk else { break Err(ProjectionError::nats("the event consumer ended")) };
                if let Err(error) = apply_chunk(kind, shared, &live, chunk).await {
                    break Err(error);
                }
            }
            _ = tick.tick() => {
                if let Err(error) = lock.ping().await {
                    break Err(error.into());
                }
                if rebuilding.as_ref().is_some_and(tokio::task::JoinHandle::is_finished) {
                    rebuilding = None;
                }
                if rebuilding.is_none() && rebuild::requested(&shared.pool, kind).await? {
                    rebuilding = Some(tokio::spawn(rebuild::run(kind, shared.clone(), live.clone())));
                }
            }
        }
    };
    if let Some(task) = rebuilding {
        task.abort();
    }
    result
}

/// Applies the event store from the checkpoint up to the transaction horizon.
pub async fn catch_up(kind: Kind, shared: &Shared, live: &mut Live) -> Result<u64, ProjectionError> {
    let mut total = 0;
    loop {
        let batch =
            flexcore_eventstore::read_all_with(shared.log(), live.checkpoint, shared.settings.replay_batch_size)
                .await?;
        if batch.is_empty() {
            return Ok(total);
        }
        let n = batch.len() as u64;
        match store::commit_batch(&shared.pool, None, kind, live, &batch, true).await? {
            Committed::Applied(_) | Committed::Skipped => {
                total += n;
                shared.positions.advance(kind, live.checkpoint);
                announce(&shared.nats, &shared.identity, kind, live.checkpoint).await;
            }
            Committed::Resync | Committed::Gap => {}
        }
    }
}

async fn apply_chunk(
    kind: Kind,
    shared: &Shared,
    live: &Mutex<Live>,
    chunk: Vec<Result<jetstream::Message, consumer::pull::MessagesError>>,
) -> Result<(), ProjectionError> {
    let mut events = Vec::with_capacity(chunk.len());
    let mut last = None;
    // While spans are exported: one per traced event this projection applies, open until
    // the batch is committed.
    let mut spans = Vec::new();
    for item in chunk {
        let message = item.map_err(ProjectionError::nats)?;
        // Only what the relay published: anything else on the stream (published despite
        // the permissions) is skipped like an undecodable message, and the event store
        // fills the position it claimed.
        if let Err(why) = shared
            .trust
            .verify_message_cached(&message.message, &[Role::Command], &shared.verified)
        {
            tracing::warn!(projection = kind.name(), subject = %message.subject, %why, "event message not signed by the command service; ignored");
            last = Some(message);
            continue;
        }
        match decode(&message) {
            Ok(event) => {
                if propagation::carried(message.headers.as_ref()) && kind.concerns(&[&event]) {
                    spans.push(apply_span(kind, &event, &message));
                }
                events.push(event);
            }
            // The contiguity check notices the hole and the event store fills it.
            Err(why) => {
                tracing::warn!(projection = kind.name(), subject = %message.subject, why, "undecodable event message")
            }
        }
        last = Some(message);
    }
    {
        let mut live = live.lock().await;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match store::commit_batch(
                &shared.pool,
                shared.separate_log.as_ref(),
                kind,
                &mut live,
                &events,
                false,
            )
            .await?
            {
                Committed::Applied(_) | Committed::Skipped => break,
                Committed::Gap | Committed::Resync if attempts < 4 => {
                    catch_up(kind, shared, &mut live).await?;
                }
                other => {
                    return Err(ProjectionError::Invariant(format!(
                        "batch still not applicable after catching up ({other:?})"
                    )))
                }
            }
        }
        shared.positions.advance(kind, live.checkpoint);
        announce(&shared.nats, &shared.identity, kind, live.checkpoint).await;
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
