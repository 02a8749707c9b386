//! The outbox relay: publishes the event log to `FLEXCORE_EVENTS`.
//!
//! Every command-service replica runs a relay candidate; the one holding a session
//! advisory lock on its dedicated connection is the leader. All its reads and checkpoint
//! writes go through that same connection, so a leader whose connection dies cannot
//! publish or advance the checkpoint, and the lock passes to another candidate.
//! Events are read in (transaction_id, global_position) order below the transaction
//! horizon, published with `Nats-Msg-Id = event_id` (a re-publish after a crash is
//! de-duplicated), and the checkpoint is advanced after JetStream acknowledged them.
//! NOTIFY only wakes the relay; it polls anyway.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::HeaderMap;
use flexcore_contracts::work::WorkItem;
use flexcore_contracts::{envelope, subjects};
use flexcore_security::Identity;
use flexcore_telemetry::propagation;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use crate::error::StoreError;
use crate::metrics::RelayProgress;
use crate::model::{Checkpoint, RecordedEvent};
use crate::store::{from_i64, read_all_with, to_i64};

/// Advisory lock key of the relay leader ("flexcore" in ASCII).
pub const RELAY_LOCK_KEY: i64 = 0x666c_6578_636f_7265;
/// The NOTIFY channel the append function signals.
pub const NOTIFY_CHANNEL: &str = "flexcore_events";
const CHECKPOINT_NAME: &str = "events";

/// Relay tuning.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Events read and published per round.
    pub batch_size: i64,
    /// Longest sleep between polls when no NOTIFY arrives.
    pub idle_poll: Duration,
    /// Pause before a candidate retries the leader lock or after an error.
    pub leader_retry: Duration,
    /// How long to wait for JetStream acknowledgements of a batch.
    pub publish_timeout: Duration,
    /// The command service's identity, which signs every event and work item: runners
    /// and schedulers act only on messages it signed (docs/security.md).
    pub signer: Identity,
}

/// How long the relay may fail at the same event before it reports itself blocked
/// (readiness 503, an error in the log): longer than a NATS restart or a JetStream
/// leader election, which heal on their own within seconds, short enough that readiness
/// probes (typically 3 × 10 s) show a stream that was deleted or misconfigured, or
/// JetStream disabled, within a minute.
pub const BLOCKED_AFTER: Duration = Duration::from_secs(30);
/// And how many attempts in a row must have failed (a single slow one is no pattern).
pub const BLOCKED_AFTER_FAILURES: u32 = 3;

/// Numbers the candidates of this process, so one clears only its own blocked mark.
static CANDIDATES: AtomicU64 = AtomicU64::new(1);

/// Runs a relay candidate until `shutdown`: competes for leadership, publishes while
/// leader, and starts over after losing its database connection or NATS.
///
/// While leading, a round that fails otherwise (a publish JetStream rejects, an event it
/// cannot encode, a statement that fails) is retried by the same leader at the same
/// position; once it has failed there for [`BLOCKED_AFTER`] (and
/// [`BLOCKED_AFTER_FAILURES`] attempts) the relay marks itself blocked
/// ([`crate::metrics::relay_block`]) naming the event and the cause, and logs that once.
/// An event larger than the server's `max_payload` blocks it at once. The mark is cleared
/// by the next round that publishes (or finds nothing to), and whenever this candidate
/// stops leading.
pub async fn run(db: PgConnectOptions, js: jetstream::Context, config: RelayConfig, shutdown: CancellationToken) {
    let me = CANDIDATES.fetch_add(1, Ordering::Relaxed);
    // The checkpoint need not wait for its WAL flush: one lost to a Postgres crash only
    // makes the relay publish again, and `Nats-Msg-Id` de-duplicates (consumers also skip
    // what they have applied).
    let db = db
        .application_name("flexcore-relay")
        .options([("synchronous_commit", "off")]);
    while !shutdown.is_cancelled() {
        let led = lead(me, &db, &js, &config, &shutdown).await;
        // No longer leading: whatever held this candidate is the next leader's to report.
        if crate::metrics::unblock_relay(me) {
            tracing::info!("relay block cleared: this instance no longer leads the relay");
        }
        if let Err(error) = led {
            tracing::warn!(%error, "relay stopped; retrying");
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(config.leader_retry) => {}
        }
    }
}

async fn lead(
    me: u64,
    db: &PgConnectOptions,
    js: &jetstream::Context,
    config: &RelayConfig,
    shutdown: &CancellationToken,
) -> Result<(), StoreError> {
    let mut conn = db.connect().await?;
    loop {
        let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(RELAY_LOCK_KEY)
            .fetch_one(&mut conn)
            .await?;
        if leader {
            break;
        }
        if crate::metrics::unblock_relay(me) {
            tracing::info!("relay block cleared: another instance leads the relay");
        }
        crate::metrics::relay(RelayProgress::Standby);
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(config.leader_retry) => {}
        }
        // A cheap liveness probe, so a candidate notices its own dead connection.
        conn.ping().await?;
    }
    tracing::info!("relay leadership acquired");
    let listen_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(db.clone().application_name("flexcore-relay-listen"));
    let mut listener = match PgListener::connect_with(&listen_pool).await {
        Ok(mut l) => match l.listen(NOTIFY_CHANNEL).await {
            Ok(()) => Some(l),
            Err(error) => {
                tracing::warn!(%error, "relay LISTEN failed; polling only");
                None
            }
        },
        Err(error) => {
            tracing::warn!(%error, "relay listener connection failed; polling only");
            None
        }
    };
    let mut checkpoint = load_checkpoint(&mut conn).await?;
    let mut last_wake = Instant::now();
    let mut trouble = Trouble { me, episode: None };
    while !shutdown.is_cancelled() {
        let mut head = None;
        match round(&mut conn, js, config, &mut checkpoint, &mut head).await {
            Ok(Round::Published) => {
                trouble.progress();
                continue;
            }
            Ok(Round::Idle) => trouble.progress(),
            Ok(Round::TooLarge(error)) => {
                trouble.too_large(checkpoint, &error);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(config.leader_retry.max(Duration::from_secs(1))) => {}
                }
                continue;
            }
            Err(error) => {
                if !still_leading(&mut conn, js).await {
                    return Err(error);
                }
                trouble.failed(checkpoint, head.as_ref(), &error);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(config.leader_retry) => {}
                }
                continue;
            }
        }
        // Nothing readable. Right after a wake-up an older open transaction may still hold
        // the horizon back, so poll quickly for a moment; otherwise wait for a NOTIFY.
        let wait = if last_wake.elapsed() < Duration::from_millis(200) {
            Duration::from_millis(2)
        } else {
            config.idle_poll
        };
        let woke = match listener.as_mut() {
            Some(l) => tokio::select! {
                () = shutdown.cancelled() => false,
                n = tokio::time::timeout(wait, l.recv()) => match n {
                    Ok(Ok(_)) => true,
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "relay listener failed; polling only");
                        listener = None;
                        false
                    }
                    Err(_) => false,
                },
            },
            None => tokio::select! {
                () = shutdown.cancelled() => false,
                () = tokio::time::sleep(wait) => false,
            },
        };
        if woke {
            last_wake = Instant::now();
        }
    }
    // Dropping the connection releases the advisory lock.
    conn.close().await?;
    Ok(())
}

/// How a round ended.
enum Round {
    /// A batch was published and the checkpoint advanced past it.
    Published,
    /// Nothing to publish.
    Idle,
    /// The next event is larger than the server's `max_payload` (what came before it in
    /// the batch was published).
    TooLarge(StoreError),
}

/// The first event of a round's batch: the one the relay is held at when the round fails.
struct Head {
    event_id: uuid::Uuid,
    event_type: String,
    global_position: u64,
}

/// One round: reads a batch after `checkpoint`, publishes it and advances `checkpoint`.
/// `head` names the batch's first event once it is read.
async fn round(
    conn: &mut PgConnection,
    js: &jetstream::Context,
    config: &RelayConfig,
    checkpoint: &mut Checkpoint,
    head: &mut Option<Head>,
) -> Result<Round, StoreError> {
    let batch = read_all_with(&mut *conn, *checkpoint, config.batch_size).await?;
    let Some(first) = batch.first() else {
        return Ok(Round::Idle);
    };
    *head = Some(Head {
        event_id: first.event_id,
        event_type: first.event_type.clone(),
        global_position: first.global_position,
    });
    if let Some(oldest) = batch.iter().map(|e| e.recorded_at).min() {
        crate::metrics::relay(RelayProgress::Pending(oldest));
    }
    let limit = js.client().max_payload();
    let (ready, blocked) = prepare(&batch, limit, &config.signer)?;
    if let Some(published) = ready.last().map(|m| m.event) {
        publish(js, ready, config.publish_timeout).await?;
        let next = published.checkpoint();
        save_checkpoint(conn, next).await?;
        crate::metrics::relay(RelayProgress::Published(published.recorded_at));
        *checkpoint = next;
    }
    Ok(match blocked {
        None => Round::Published,
        Some(error) => {
            if let StoreError::TooLarge { size, limit, .. } = &error {
                crate::metrics::relay(RelayProgress::Blocked {
                    size: *size,
                    limit: *limit,
                });
            }
            Round::TooLarge(error)
        }
    })
}

/// Whether this candidate goes on leading after a failed round: its Postgres session
/// (which holds the lock) still answers and its NATS client is connected. Otherwise it
/// gives the lead up (the failure may be its own connection's, and another candidate may
/// get through); with both up, the failure is the stream's or the server's (or an event's)
/// and would be every candidate's, so the leader retries it and reports it.
async fn still_leading(conn: &mut PgConnection, js: &jetstream::Context) -> bool {
    if js.client().connection_state() != async_nats::connection::State::Connected {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(5), conn.ping()).await,
        Ok(Ok(()))
    )
}

/// The failed rounds of a leader at one position, in a row.
struct Trouble {
    /// The candidate (its blocked mark).
    me: u64,
    episode: Option<Episode>,
}

struct Episode {
    /// The checkpoint the rounds started from.
    at: Checkpoint,
    /// The first failure.
    started: Instant,
    since: chrono::DateTime<chrono::Utc>,
    failures: u32,
    /// Whether the mark is set.
    blocked: bool,
    /// The last error logged at warn level, so a repeated one is not.
    warned: Option<String>,
    /// When the error-level line was last logged.
    logged: Option<Instant>,
}

impl Trouble {
    /// The episode at `at`, a new one if the position moved.
    fn at(&mut self, at: Checkpoint) -> &mut Episode {
        let episode = self.episode.take().filter(|e| e.at == at);
        self.episode.insert(episode.unwrap_or_else(|| Episode {
            at,
            started: Instant::now(),
            since: chrono::Utc::now(),
            failures: 0,
            blocked: false,
            warned: None,
            logged: None,
        }))
    }

    /// A round published (or had nothing to): not blocked.
    fn progress(&mut self) {
        let failed = self.episode.take().is_some_and(|e| e.failures > 0);
        if crate::metrics::unblock_relay(self.me) {
            tracing::info!("relay unblocked: publishing again");
        } else if failed {
            tracing::info!("relay publishing again");
        }
    }

    /// The next event is too large for the server: blocked at once (no retry can help
    /// until the limit grows), logged on change and every minute.
    fn too_large(&mut self, at: Checkpoint, error: &StoreError) {
        let me = self.me;
        let episode = self.at(at);
        episode.failures += 1;
        episode.blocked = true;
        let changed = crate::metrics::block_relay(me, error.to_string(), episode.since);
        if changed || episode.logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            tracing::error!(
                %error,
                "relay blocked: this event and every later one wait until the NATS server's max_payload admits it (docs/troubleshooting.md, \"relay blocked\")"
            );
            episode.logged = Some(Instant::now());
        }
    }

    /// A round failed at `at`, `head` being the event it was to publish first (if it read
    /// one). Warned when the error is new; marked blocked (and logged at error level, once)
    /// after [`BLOCKED_AFTER`]; retried in any case.
    fn failed(&mut self, at: Checkpoint, head: Option<&Head>, error: &StoreError) {
        let me = self.me;
        let episode = self.at(at);
        episode.failures += 1;
        let text = error.to_string();
        let reason = match head {
            Some(head) => format!(
                "event {} ({}, global position {}) and every later one wait: {} attempts to publish failed in a row, the last with: {text}",
                head.event_id, head.event_type, head.global_position, episode.failures
            ),
            None => format!(
                "the events after global position {} wait: {} attempts to read them failed in a row, the last with: {text}",
                at.global_position, episode.failures
            ),
        };
        if episode.blocked {
            crate::metrics::block_relay(me, reason, episode.since);
            tracing::debug!(%error, failures = episode.failures, "relay still blocked; retrying");
        } else if episode.failures >= BLOCKED_AFTER_FAILURES && episode.started.elapsed() >= BLOCKED_AFTER {
            episode.blocked = true;
            crate::metrics::block_relay(me, reason.clone(), episode.since);
            tracing::error!(
                %error,
                %reason,
                "relay blocked: publishing keeps failing at the same event; it and every later one wait, retried until it succeeds (docs/troubleshooting.md, \"relay blocked\")"
            );
            episode.logged = Some(Instant::now());
        } else if episode.warned.as_deref() != Some(text.as_str()) {
            tracing::warn!(%error, after_global_position = at.global_position, "relay publishing failed; retrying");
            episode.warned = Some(text);
        } else {
            tracing::debug!(%error, failures = episode.failures, "relay publishing failed again; retrying");
        }
    }
}

async fn load_checkpoint(conn: &mut PgConnection) -> Result<Checkpoint, StoreError> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT transaction_id::text::bigint, global_position FROM relay_checkpoints WHERE name = $1")
            .bind(CHECKPOINT_NAME)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map_or_else(Checkpoint::default, |(tx, position)| Checkpoint {
        transaction_id: from_i64(tx),
        global_position: from_i64(position),
    }))
}

async fn save_checkpoint(conn: &mut PgConnection, cp: Checkpoint) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO relay_checkpoints (name, transaction_id, global_position, updated_at) \
         VALUES ($1, $2::text::xid8, $3, now()) \
         ON CONFLICT (name) DO UPDATE SET transaction_id = excluded.transaction_id, \
             global_position = excluded.global_position, updated_at = now() \
         WHERE (relay_checkpoints.transaction_id, relay_checkpoints.global_position) \
             < (excluded.transaction_id, excluded.global_position)",
    )
    .bind(CHECKPOINT_NAME)
    .bind(cp.transaction_id.to_string())
    .bind(to_i64(cp.global_position))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The relay's checkpoint as stored (for tests and status).
pub async fn checkpoint(pool: &sqlx::PgPool) -> Result<Checkpoint, StoreError> {
    let mut conn = pool.acquire().await?;
    load_checkpoint(&mut conn).await
}

/// One event's messages, ready to publish.
struct Prepared<'a> {
    event: &'a RecordedEvent,
    subject: String,
    headers: HeaderMap,
    body: Vec<u8>,
    work: Option<(String, HeaderMap, Vec<u8>)>,
}

/// The messages of `batch` up to (not including) the first one larger than `limit`, and
/// the error that names that one. Nothing after it is published, so the order holds.
fn prepare<'a>(
    batch: &'a [RecordedEvent],
    limit: usize,
    signer: &Identity,
) -> Result<(Vec<Prepared<'a>>, Option<StoreError>), StoreError> {
    let mut ready = Vec::with_capacity(batch.len());
    for event in batch {
        let (subject, mut headers, body) = message(event)?;
        signer.sign(&subject, &mut headers, &body);
        let size = wire_size(&headers, body.len());
        if size > limit {
            let error = StoreError::TooLarge {
                event_id: event.event_id,
                event_type: event.event_type.clone(),
                global_position: event.global_position,
                size,
                limit,
            };
            return Ok((ready, Some(error)));
        }
        let work = work_message(event)?.map(|(subject, mut headers, body)| {
            signer.sign(&subject, &mut headers, &body);
            (subject, headers, body)
        });
        ready.push(Prepared {
            event,
            subject,
            headers,
            body,
            work,
        });
    }
    Ok((ready, None))
}

/// The size the NATS server counts against its `max_payload`: the header block (as the
/// client writes it) plus the body.
pub fn wire_size(headers: &HeaderMap, body_len: usize) -> usize {
    if headers.is_empty() {
        return body_len;
    }
    let mut len = b"NATS/1.0\r\n".len() + b"\r\n".len();
    for (name, values) in headers.iter() {
        for value in values {
            len += AsRef::<str>::as_ref(name).len() + b": ".len() + value.as_str().len() + b"\r\n".len();
        }
    }
    len + body_len
}

/// The largest size the message of `event` can have once committed: the store's own
/// values (position, transaction, time) are unknown before, so the widest are assumed.
pub fn published_size_bound(event: &crate::model::NewEvent) -> Result<usize, StoreError> {
    let widest = RecordedEvent {
        global_position: i64::MAX as u64,
        transaction_id: u64::MAX,
        event_id: event.event_id,
        aggregate_type: event.aggregate_type.clone(),
        aggregate_id: event.aggregate_id,
        version: event.version,
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        data: event.data.clone(),
        metadata: event.metadata.clone(),
        // As wide as any time the store writes: a 4-digit year with nanoseconds.
        recorded_at: chrono::DateTime::from_timestamp(253_402_300_799, 999_999_999).unwrap_or_default(),
    };
    let (_, headers, body) = message(&widest)?;
    // A relay that exports spans puts its own `traceparent` in: make room for one; and
    // the relay's signature.
    let traceparent = if event.metadata.traceparent.is_none() { 70 } else { 0 };
    Ok(wire_size(&headers, body.len()) + traceparent + Identity::SIGNATURE_WIRE_BYTES)
}

/// Publishes a batch pipelined (all sent, then all acknowledgements awaited in order).
/// Right after a `run.requested` or `run.retried` event comes the attempt's work item on
/// `FLEXCORE_WORK`: this is where requested runs are handed to the runners. While spans
/// are exported, each traced event gets a `relay.publish` span (until its batch is
/// acknowledged) whose context its message and work item carry.
async fn publish(js: &jetstream::Context, batch: Vec<Prepared<'_>>, timeout: Duration) -> Result<(), StoreError> {
    // Acknowledgements of messages the server never received (written just before a
    // disconnection) never come: a reconnection ends the wait at once instead of the
    // timeout, and the batch is published again (`Nats-Msg-Id` drops what did arrive).
    let statistics = js.client().statistics();
    let connects = statistics.connects.load(Ordering::Relaxed);
    let reconnected = async {
        while statistics.connects.load(Ordering::Relaxed) == connects {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut acks = Vec::with_capacity(batch.len());
    let mut spans = Vec::new();
    for prepared in batch {
        let Prepared {
            event,
            subject,
            mut headers,
            body,
            work,
        } = prepared;
        let span = publish_span(event);
        if let Some(span) = &span {
            propagation::inject(span, &mut headers);
        }
        let ack = js
            .publish_with_headers(subject, headers, body.into())
            .await
            .map_err(|e| StoreError::nats(format!("publish {}", event.event_id), e))?;
        acks.push(ack);
        if let Some((subject, mut headers, payload)) = work {
            if let Some(span) = &span {
                propagation::inject(span, &mut headers);
            }
            let ack = js
                .publish_with_headers(subject, headers, payload.into())
                .await
                .map_err(|e| StoreError::nats(format!("publish work for {}", event.aggregate_id), e))?;
            acks.push(ack);
        }
        spans.extend(span);
    }
    let all = async {
        for ack in acks {
            ack.await.map_err(|e| StoreError::nats("publish ack", e))?;
        }
        Ok::<(), StoreError>(())
    };
    let acknowledged = tokio::select! {
        acknowledged = tokio::time::timeout(timeout, all) => acknowledged
            .map_err(|_| StoreError::Unacknowledged(format!("no JetStream acknowledgement within {timeout:?}")))?,
        () = reconnected => Err(StoreError::Unacknowledged(
            "NATS reconnected before the batch was acknowledged; publishing it again".to_owned(),
        )),
    };
    drop(spans);
    acknowledged
}

/// The `relay.publish` span of an event: a child of the command handling that wrote it
/// (its stored `traceparent`). `None` unless spans are exported and the event has one of
/// a sampled trace (an unsampled one travels on in the headers as stored).
fn publish_span(event: &RecordedEvent) -> Option<tracing::Span> {
    if !propagation::enabled() {
        return None;
    }
    let traceparent = event.metadata.traceparent.as_deref()?;
    if !propagation::sampled(traceparent) {
        return None;
    }
    let span = tracing::info_span!(
        target: flexcore_telemetry::TRACE_ONLY,
        "relay.publish",
        event_type = %event.event_type,
        aggregate_id = %event.aggregate_id,
        global_position = event.global_position,
    );
    propagation::set_parent_traceparent(&span, Some(traceparent));
    Some(span)
}

/// The work item that follows a `run.requested` / `run.retried` event, if it is one.
pub fn work_message(event: &RecordedEvent) -> Result<Option<(String, HeaderMap, Vec<u8>)>, StoreError> {
    if event.event_type != "run.requested" && event.event_type != "run.retried" {
        return Ok(None);
    }
    /// The fields of `run.requested` / `run.retried` a work item needs.
    #[derive(serde::Deserialize)]
    struct Attempt {
        attempt: u32,
        pipeline_id: uuid::Uuid,
    }
    let Attempt { attempt, pipeline_id } = event.data.decode().map_err(|e| {
        StoreError::Protocol(format!(
            "{} without a valid attempt and pipeline_id: {e}",
            event.event_type
        ))
    })?;
    let item = WorkItem {
        run_id: event.aggregate_id,
        attempt,
        pipeline_id,
        correlation_id: event.metadata.correlation_id.clone(),
    };
    let mut headers = HeaderMap::new();
    headers.insert(envelope::HEADER_MSG_ID, item.msg_id().as_str());
    if let Some(tp) = &event.metadata.traceparent {
        headers.insert(envelope::HEADER_TRACEPARENT, tp.as_str());
    }
    let body = serde_json::to_vec(&item).map_err(|e| StoreError::Protocol(e.to_string()))?;
    Ok(Some((subjects::work_run(item.run_id), headers, body)))
}

/// Subject, headers and body of an event's JetStream message.
pub fn message(event: &RecordedEvent) -> Result<(String, HeaderMap, Vec<u8>), StoreError> {
    let subject = subjects::event(&event.aggregate_type, event.aggregate_id, &event.event_type);
    let mut headers = HeaderMap::new();
    headers.insert(envelope::HEADER_MSG_ID, event.event_id.to_string().as_str());
    headers.insert(
        envelope::HEADER_GLOBAL_POSITION,
        event.global_position.to_string().as_str(),
    );
    headers.insert(envelope::HEADER_VERSION, event.version.to_string().as_str());
    headers.insert(
        envelope::HEADER_SCHEMA_VERSION,
        event.schema_version.to_string().as_str(),
    );
    headers.insert(envelope::HEADER_EVENT_TYPE, event.event_type.as_str());
    headers.insert(
        envelope::HEADER_TRANSACTION_ID,
        event.transaction_id.to_string().as_str(),
    );
    if let Some(tp) = &event.metadata.traceparent {
        headers.insert(envelope::HEADER_TRACEPARENT, tp.as_str());
    }
    let body = serde_json::to_vec(&event.to_envelope()).map_err(|e| StoreError::Protocol(e.to_string()))?;
    Ok((subject, headers, body))
}
