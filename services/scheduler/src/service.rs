//! The scheduler's I/O: replays and follows `FLEXCORE_EVENTS` with an ordered consumer,
//! listens to run heartbeats and replica presence, sleeps until the next deadline, and sends
//! the commands [`Core`] decides on with bounded concurrency; replies come back as
//! [`Outcome`]s.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer::DeliverPolicy};
use chrono::Utc;
use flexcore_client::{command_id, ClientError, Retry};
use flexcore_config::SchedulerSettings;
use flexcore_contracts::commands::{CommandBody, MissSlots, RequestRun, RetryRun, SkipSlot, TimeOutRun};
use flexcore_contracts::envelope::EventEnvelope;
use flexcore_contracts::ids::scheduled_run_id;
use flexcore_contracts::model::RunTrigger;
use flexcore_contracts::work::{RunHeartbeat, SchedulerPresence};
use flexcore_contracts::{subjects, ErrorReason};
use flexcore_security::{Identity, Role, Signed, Trust, PRESENCE_FRESHNESS};
use flexcore_service::security::Credentials;
use flexcore_telemetry::propagation;
use futures::StreamExt;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::clock::Clock;
use crate::core::{Action, Core, Outcome, Tuning};
use crate::members::Members;
use crate::snapshot;

/// How long after acting on a key the scheduler checks it again if the log shows nothing.
const RECHECK_AFTER: Duration = Duration::from_secs(10);
/// Tries of one command before it is reported as failed (and sent again, with the same
/// command id, when its key comes due again).
const SEND_ATTEMPTS: u32 = 5;

/// Runs one scheduler replica until `shutdown`.
pub async fn run(
    settings: &SchedulerSettings,
    client: async_nats::Client,
    credentials: Credentials,
    request_timeout: Duration,
    clock: Clock,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Registered now, so `/metrics` shows the (empty) fire-lag histogram from the start.
    flexcore_service::metrics::scheduler();
    let instance = instance_id(settings);
    let span = tracing::info_span!("scheduler", instance = %instance);
    replica(
        settings,
        client,
        credentials,
        request_timeout,
        clock,
        shutdown,
        instance,
    )
    .instrument(span)
    .await
}

async fn replica(
    settings: &SchedulerSettings,
    client: async_nats::Client,
    credentials: Credentials,
    request_timeout: Duration,
    clock: Clock,
    shutdown: CancellationToken,
    instance: String,
) -> anyhow::Result<()> {
    let js = jetstream::new(client.clone());
    let Some(stream) = events_stream(&js, &shutdown).await else {
        return Ok(());
    };
    let state = stream
        .get_info()
        .await
        .context("reading the events stream's state")?
        .state;
    // Replayed once the message that was last at start is applied (or nothing is pending).
    let replay_to = if state.messages == 0 { 0 } else { state.last_sequence };
    let mut heartbeats = client.subscribe(subjects::RUN_HEARTBEATS_WILDCARD).await?;
    let mut presence = client.subscribe(subjects::SCHEDULER_PRESENCE).await?;
    let tuning = Tuning {
        takeover_grace: chrono::Duration::from_std(settings.takeover_grace).unwrap_or(chrono::Duration::MAX),
        recheck_after: chrono::Duration::from_std(RECHECK_AFTER).unwrap_or(chrono::Duration::MAX),
        max_catchup_slots: settings.max_catchup_slots.max(1),
    };
    let members = Members::new(instance.clone(), settings.presence_interval * 3);
    let mut last_sequence = 0u64;
    let mut core = match snapshot::load(&js, &credentials.trust, &stream).await {
        Ok(Some(snapshot)) => {
            last_sequence = snapshot.sequence;
            let core = Core::restore(tuning, members, snapshot.state);
            let (schedules, runs, _) = core.counts();
            tracing::info!(
                sequence = snapshot.sequence,
                schedules,
                runs,
                "starting from the scheduler snapshot; folding the events after it"
            );
            core
        }
        Ok(None) => Core::new(tuning, members),
        Err(error) => {
            tracing::warn!(
                error = format!("{error:#}"),
                "not starting from the scheduler snapshot; replaying the whole event log"
            );
            Core::new(tuning, members)
        }
    };
    let mut snapshots = snapshot::Writer::new(settings, last_sequence);
    let (outcomes_tx, mut outcomes) = mpsc::channel::<(Action, Outcome)>(4096);
    let sender = Sender::start(
        flexcore_client::Client::new(client.clone())
            .with_identity(credentials.identity.clone())
            .with_timeout(request_timeout),
        settings.max_in_flight,
        outcomes_tx,
        shutdown.clone(),
    );
    let mut events = follow(&stream, last_sequence).await?;
    // Reconnections so far: after one the ordered consumer (in the server's memory) may be
    // gone, and async-nats notices only after two missed idle heartbeats (tens of
    // seconds), so the consumer is created again at once.
    let mut connects = client.statistics().connects.load(Ordering::Relaxed);
    // Held while the replica is live: readiness says `serving:schedules` from then on.
    let mut serving = None;
    if replay_to <= last_sequence {
        core.go_live(clock.now());
        serving = Some(flexcore_service::admin::Serving::start(crate::metrics::SERVING));
    }
    let Credentials { identity, trust } = credentials;
    announce(&client, &identity, &instance, true).await;
    let mut tick = tokio::time::interval(settings.presence_interval);
    tracing::info!(replay_to, "scheduler started; replaying the event log");
    // Set when the log cannot be folded: the replica says goodbye and stops with it.
    let mut failure = None;
    'follow: loop {
        let deadline = core.next_deadline();
        tokio::select! {
            () = shutdown.cancelled() => break,
            // While a burst of commands waits to be sent (10,000 slots due in the same
            // second), the log's events wait: verifying and folding the burst's own
            // `run.requested` events would take CPU from sending it. Nothing due in the
            // burst depends on them (the runs are `requesting` already), and the loop
            // wakes at every command's outcome, so following resumes as the burst drains.
            chunk = events.next(), if !sender.is_backlogged() => match chunk {
                Some(chunk) => {
                    // The messages that arrived together are folded together, their
                    // signatures checked in one batch equation (a catch-up's main cost
                    // halves). What follows an error comes again from the consumer
                    // followed anew.
                    let mut batch = Vec::with_capacity(chunk.len());
                    let mut failed = None;
                    for item in chunk {
                        match item {
                            Ok(message) => batch.push(message),
                            Err(error) => {
                                failed = Some(error);
                                break;
                            }
                        }
                    }
                    let signed: Vec<Signed<'_>> = batch.iter().map(|m| Signed::from(&m.message)).collect();
                    let verdicts = trust.verify_all(&signed, &[Role::Command], None, None);
                    for (message, trusted) in batch.into_iter().zip(verdicts) {
                        let (sequence, pending) = message
                            .info()
                            .map(|i| (i.stream_sequence, i.pending))
                            .unwrap_or((last_sequence + 1, 1));
                        if sequence <= last_sequence {
                            // Delivered again by a consumer async-nats created anew (it restarts
                            // from the last message it saw itself, or the stream's start).
                            continue;
                        }
                        last_sequence = sequence;
                        snapshots.folded(sequence, &message);
                        // Only what the command service's relay signed is history.
                        let applied = match trusted.map(|_| serde_json::from_slice::<EventEnvelope>(&message.payload)) {
                            Err(error) => {
                                tracing::warn!(%error, subject = %message.subject, sequence, "unverified event ignored");
                                Ok(())
                            }
                            // Live events only: a replay would add spans to old traces.
                            Ok(Ok(event)) if core.is_live() && propagation::carried(message.headers.as_ref()) => {
                                // The scheduler's part in the trace of what wrote the event.
                                let span = tracing::info_span!(
                                    target: flexcore_telemetry::TRACE_ONLY,
                                    parent: None,
                                    "scheduler.apply",
                                    event_type = %event.event_type,
                                    aggregate_id = %event.aggregate_id
                                );
                                propagation::set_parent(&span, message.headers.as_ref());
                                span.in_scope(|| core.apply(&event)).map_err(anyhow::Error::from)
                            }
                            Ok(Ok(event)) => core.apply(&event).map_err(anyhow::Error::from),
                            // Signed by the relay, so it is history too.
                            Ok(Err(error)) => Err(anyhow::Error::from(error).context("the event envelope does not parse")),
                        };
                        // The log is the truth: an event skipped here would leave the replica
                        // acting on a state the log does not describe. It stops, like a
                        // projection stops at such an event (docs/architecture.md).
                        if let Err(error) = applied {
                            failure = Some(error.context(format!(
                                "event message {sequence} on {} cannot be folded; the scheduler stops",
                                message.subject
                            )));
                            break 'follow;
                        }
                        if !core.is_live() && (sequence >= replay_to || pending == 0) {
                            core.go_live(clock.now());
                            serving = Some(flexcore_service::admin::Serving::start(crate::metrics::SERVING));
                            let (schedules, runs, timers) = core.counts();
                            tracing::info!(schedules, runs, timers, "log replayed; firing");
                        }
                        snapshots.maybe_write(&js, &identity, &core);
                    }
                    if let Some(error) = failed {
                        tracing::warn!(%error, last_sequence, "event stream error; following again");
                        let Some(again) = follow_again(&stream, last_sequence, &shutdown).await else { break };
                        events = again;
                    }
                }
                None => {
                    tracing::warn!(last_sequence, "event consumer ended; following again");
                    let Some(again) = follow_again(&stream, last_sequence, &shutdown).await else { break };
                    events = again;
                }
            },
            Some(message) = heartbeats.next() => {
                if let Some(beat) = verified::<RunHeartbeat>(&trust, &message, Role::Runner) {
                    core.heartbeat(beat.run_id, beat.attempt, clock.now());
                }
            }
            Some(message) = presence.next() => {
                if let Some(p) = verified::<SchedulerPresence>(&trust, &message, Role::Scheduler) {
                    core.heard(&p.instance, p.alive, Instant::now());
                }
            }
            _ = tick.tick() => {
                let now_connects = client.statistics().connects.load(Ordering::Relaxed);
                if now_connects != connects {
                    connects = now_connects;
                    core.heartbeats_missed(clock.now());
                    tracing::info!(last_sequence, "reconnected to NATS; following the events stream again");
                    let Some(again) = follow_again(&stream, last_sequence, &shutdown).await else { break };
                    events = again;
                }
                announce(&client, &identity, &instance, true).await;
                core.expire_members(Instant::now());
                // A snapshot that came due while the previous one was being written.
                snapshots.maybe_write(&js, &identity, &core);
            }
            Some((action, outcome)) = outcomes.recv() => {
                if let Outcome::Failed(why) = &outcome {
                    tracing::warn!(?action, %why, "command not delivered; will try again");
                }
                for follow_up in core.outcome(&action, &outcome, clock.now()) {
                    sender.send(follow_up);
                }
            }
            () = sleep_until(&clock, deadline) => {
                let now = clock.now();
                // No heartbeat can arrive while disconnected (nor after, until the next
                // tick notices the reconnection): no lease is judged meanwhile.
                if client.connection_state() != async_nats::connection::State::Connected
                    || client.statistics().connects.load(Ordering::Relaxed) != connects
                {
                    core.heartbeats_missed(now);
                }
                for action in core.due(now) {
                    if let Action::Fire { slot, .. } = &action {
                        let lag = (now - *slot).num_milliseconds();
                        tracing::debug!(?action, lag_ms = lag, "firing");
                        flexcore_service::metrics::scheduler().fired(lag as f64 / 1000.0);
                    }
                    sender.send(action);
                }
            }
        }
    }
    drop(serving);
    announce(&client, &identity, &instance, false).await;
    let _ = tokio::time::timeout(flexcore_service::FLUSH_TIMEOUT, client.flush()).await;
    match failure {
        Some(error) => Err(error),
        None => {
            tracing::info!("scheduler stopped");
            Ok(())
        }
    }
}

async fn sleep_until(clock: &Clock, deadline: Option<chrono::DateTime<Utc>>) {
    match deadline {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Most event messages folded in one go, their signatures checked together.
const FOLD_BATCH: usize = 128;

/// The events stream, waiting for setup to create it.
async fn events_stream(js: &jetstream::Context, shutdown: &CancellationToken) -> Option<jetstream::stream::Stream> {
    flexcore_service::streams::wait_for(js, subjects::EVENTS_STREAM, shutdown).await
}

/// [`follow`], tried every second until it succeeds (NATS may be down); `None` on shutdown.
async fn follow_again(stream: &jetstream::stream::Stream, after: u64, shutdown: &CancellationToken) -> Option<Events> {
    loop {
        match follow(stream, after).await {
            Ok(events) => return Some(events),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                after,
                "cannot follow the events stream; retrying"
            ),
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The events stream's messages as they arrive, in chunks of what has arrived together.
type Events = futures::stream::ReadyChunks<jetstream::consumer::pull::Ordered>;

/// An ordered consumer of every event after stream sequence `after`.
async fn follow(stream: &jetstream::stream::Stream, after: u64) -> anyhow::Result<Events> {
    let deliver_policy = if after == 0 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: after + 1,
        }
    };
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: subjects::EVENTS_WILDCARD.to_owned(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .context("creating the scheduler's ordered consumer")?;
    let messages = consumer.messages().await.context("following the events stream")?;
    Ok(messages.ready_chunks(FOLD_BATCH))
}

/// The body of a core NATS message signed by an identity of `role` lately (heartbeats and
/// presence: a forged one could keep a dead run's lease or a gone replica's share alive);
/// `None`, logged, otherwise.
fn verified<T: serde::de::DeserializeOwned>(trust: &Trust, message: &async_nats::Message, role: Role) -> Option<T> {
    if let Err(error) = trust.verify_message(message, &[role], Some(PRESENCE_FRESHNESS)) {
        tracing::debug!(%error, subject = %message.subject, "unverified message ignored");
        return None;
    }
    serde_json::from_slice(&message.payload).ok()
}

async fn announce(client: &async_nats::Client, identity: &Identity, instance: &str, alive: bool) {
    let presence = SchedulerPresence {
        instance: instance.to_owned(),
        alive,
    };
    if let Ok(body) = serde_json::to_vec(&presence) {
        let mut headers = identity.signed_headers(subjects::SCHEDULER_PRESENCE, &body);
        flexcore_service::reply::name_service(&mut headers, crate::SERVICE);
        if let Err(error) = client
            .publish_with_headers(subjects::SCHEDULER_PRESENCE, headers, body.into())
            .await
        {
            tracing::warn!(%error, "presence not announced");
        }
    }
}

fn instance_id(settings: &SchedulerSettings) -> String {
    if !settings.instance_id.is_empty() {
        return settings.instance_id.clone();
    }
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "scheduler".to_owned());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &Uuid::new_v4().simple().to_string()[..6]
    )
}

/// Sends commands with bounded concurrency and reports how each ended.
///
/// Actions wait in a queue (a few dozen bytes each) and a dispatcher starts a task per
/// action only once it holds one of `max_in_flight` permits: a minute boundary that makes
/// 10,000 slots due at once then holds 10,000 queued actions, not 10,000 parked tasks
/// with a request future each (which made most of the replica's memory).
struct Sender {
    queue: mpsc::UnboundedSender<(Action, flexcore_service::in_flight::Tracked)>,
    /// Actions queued and not yet handed to a task.
    backlog: Arc<AtomicUsize>,
}

impl Sender {
    /// Starts the dispatcher; it ends when the sender is dropped or at `stop`.
    fn start(
        client: flexcore_client::Client,
        max_in_flight: usize,
        outcomes: mpsc::Sender<(Action, Outcome)>,
        stop: CancellationToken,
    ) -> Self {
        let (queue, mut queued) = mpsc::unbounded_channel::<(Action, flexcore_service::in_flight::Tracked)>();
        let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
        let backlog = Arc::new(AtomicUsize::new(0));
        let waiting = backlog.clone();
        tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    () = stop.cancelled() => return,
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                };
                let Some((action, tracked)) = queued.recv().await else {
                    return;
                };
                waiting.fetch_sub(1, Ordering::Relaxed);
                let client = client.clone();
                let outcomes = outcomes.clone();
                let retry = Retry::attempts(SEND_ATTEMPTS).stopping_at(stop.clone());
                // A fired slot starts a trace of its own; a retry or time-out continues the
                // run's. The command service continues either.
                let span = if propagation::enabled() {
                    let span = tracing::info_span!(target: flexcore_telemetry::TRACE_ONLY, parent: None, "scheduler.command", command = action.command());
                    propagation::set_parent_traceparent(&span, action.traceparent());
                    span
                } else {
                    tracing::Span::none()
                };
                tokio::spawn(async move {
                    let _tracked = tracked;
                    let _permit = permit;
                    let outcome = deliver(&client, &action, retry).instrument(span).await;
                    if let Outcome::Refused(why) = &outcome {
                        tracing::debug!(?action, %why, "command refused");
                    }
                    let _ = outcomes.send((action, outcome)).await;
                });
            }
        });
        Self { queue, backlog }
    }

    /// True while actions wait for one of the `max_in_flight` permits (a burst of due
    /// slots is being sent).
    fn is_backlogged(&self) -> bool {
        self.backlog.load(Ordering::Relaxed) > 0
    }

    fn send(&self, action: Action) {
        let tracked = flexcore_service::in_flight::track("scheduler commands");
        // Fails only once the dispatcher stopped (shutdown): nothing is sent then anyway.
        self.backlog.fetch_add(1, Ordering::Relaxed);
        if self.queue.send((action, tracked)).is_err() {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The command id of skipping `slot` of `schedule_id`: the slot's alone, not the reason's.
/// Two replicas that see the slot differently (one finds the pipeline paused, the other a
/// run still active) then send one command, which the command service applies once: with
/// the reason in the id, both skips were recorded (found by the cluster fault test).
fn skip_command_id(schedule_id: Uuid, slot: chrono::DateTime<chrono::Utc>) -> Uuid {
    command_id(scheduled_run_id(schedule_id, slot), "skip")
}

/// Sends one command, with an id derived from what it does so every replica sends the same
/// command (and the command service applies it once), and says how it ended.
async fn deliver(client: &flexcore_client::Client, action: &Action, retry: Retry) -> Outcome {
    async fn send<C: CommandBody>(
        client: &flexcore_client::Client,
        body: &C,
        id: Uuid,
        correlation: Option<&String>,
        retry: Retry,
    ) -> Result<(), ClientError> {
        let mut send = client.command(body).id(id).retry(retry);
        if let Some(correlation) = correlation {
            send = send.correlation(correlation.clone());
        }
        send.send().await.map(|_| ())
    }
    let sent = match action {
        Action::Fire {
            schedule_id,
            pipeline_id,
            slot,
        } => {
            let run_id = scheduled_run_id(*schedule_id, *slot);
            let body = RequestRun {
                run_id: Some(run_id),
                pipeline_id: *pipeline_id,
                trigger: RunTrigger::Schedule,
                schedule_id: Some(*schedule_id),
                scheduled_for: Some(*slot),
            };
            send(client, &body, command_id(run_id, "request"), None, retry).await
        }
        Action::Skip {
            schedule_id,
            slot,
            reason,
        } => {
            let Ok(reason_label) = reason.parse() else {
                return Outcome::Refused(format!("skip reason {reason:?} is not a label"));
            };
            let body = SkipSlot {
                schedule_id: *schedule_id,
                slot: *slot,
                reason: reason_label,
            };
            send(client, &body, skip_command_id(*schedule_id, *slot), None, retry).await
        }
        Action::Miss { schedule_id, slots } => {
            let key = format!("miss:{:?}:{:?}:{}", slots.first(), slots.last(), slots.len());
            let body = MissSlots {
                schedule_id: *schedule_id,
                slots: slots.clone(),
            };
            send(client, &body, command_id(*schedule_id, &key), None, retry).await
        }
        Action::TimeOut {
            run_id,
            attempt,
            reason,
            correlation_id,
            ..
        } => {
            let body = TimeOutRun {
                run_id: *run_id,
                attempt: *attempt,
                reason: *reason,
            };
            // The runner that finds a lapsed lease derives the same id: one is applied.
            let id = command_id(*run_id, &format!("time_out:{attempt}:{reason:?}"));
            send(client, &body, id, correlation_id.as_ref(), retry).await
        }
        Action::Retry {
            run_id,
            failed_attempt,
            correlation_id,
            ..
        } => {
            let body = RetryRun {
                run_id: *run_id,
                failed_attempt: *failed_attempt,
            };
            let id = command_id(*run_id, &format!("retry:{failed_attempt}"));
            send(client, &body, id, correlation_id.as_ref(), retry).await
        }
    };
    match sent {
        Ok(()) => Outcome::Done,
        Err(error) if error.reason() == Some(ErrorReason::MaxActiveRuns) => Outcome::PoolFull,
        Err(ClientError::Refused { error, .. }) => Outcome::Refused(error.to_string()),
        Err(other) => Outcome::Failed(other.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Replicas that skip one slot for different reasons send one command (the command
    /// service applies a command id once), so the slot is skipped once; another slot or
    /// schedule is another command, and firing the slot is not skipping it.
    #[test]
    fn a_slot_is_skipped_by_one_command_whatever_the_reason() {
        let schedule = Uuid::from_u128(7);
        let slot = chrono::DateTime::parse_from_rfc3339("2026-12-05T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let id = skip_command_id(schedule, slot);
        assert_eq!(id, skip_command_id(schedule, slot));
        assert_ne!(id, skip_command_id(schedule, slot + chrono::Duration::seconds(1)));
        assert_ne!(id, skip_command_id(Uuid::from_u128(8), slot));
        assert_ne!(id, command_id(scheduled_run_id(schedule, slot), "request"));
    }
}
