//! One work item: claim the attempt, run it, report every checkpoint and the outcome.
//! The attempt number is the fencing token: as soon as the command service refuses one of
//! our commands as stale, this attempt stops and reports nothing more.
//!
//! Every command carries a `command_id` derived from the run, the attempt and what it
//! reports, and is sent through the typed client: a checkpoint or an outcome is retried
//! (the lease kept alive meanwhile) until the command service answers or the runner gives
//! up at the end of its shutdown grace, so an outage of the command service, NATS or
//! Postgres neither loses a checkpoint nor makes finished work run again.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use flexcore_client::{command_id, ClientError, Retry};
use flexcore_contracts::commands::{CheckpointRun, ClaimRun, CommandBody, FailRun, SucceedRun, TimeOutRun};
use flexcore_contracts::model::{PluginRuntime, RunError, StreamCounters, TimeoutReason};
use flexcore_contracts::values::{Digest, Label};
use flexcore_contracts::work::{RunHeartbeat, RunLogLine, WorkItem};
use flexcore_contracts::{subjects, ErrorCode, OpaqueJson};
use flexcore_security::{Identity, Role, Trust, PRESENCE_FRESHNESS};
use flexcore_telemetry::propagation;
use futures::StreamExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::definition::{self, AttemptDefinition};
use super::env::EnvAllowList;
use super::secrets::{self, SecretSource};
use crate::executor::{self, ExecEvent, ExecFailure, Program, Secrets, Stage};
use crate::sandbox::Sandbox;

/// What every attempt shares.
pub struct Context {
    /// NATS connection.
    pub client: async_nats::Client,
    /// JetStream.
    pub js: jetstream::Context,
    /// The sandbox.
    pub sandbox: Arc<Sandbox>,
    /// This runner's id.
    pub runner_id: String,
    /// Lease length (the work consumer's AckWait).
    pub lease: Duration,
    /// Secret source.
    pub secrets: SecretSource,
    /// Environment variables plugins may be granted.
    pub plugin_env_allow: EnvAllowList,
    /// Cancelled on runner shutdown.
    pub shutdown: CancellationToken,
    /// Cancelled when the runner's shutdown grace is over: reports still unanswered then
    /// are given up (the lease lapses and the attempt is retried).
    pub abandon: CancellationToken,
    /// The command client (signing as this runner's identity).
    pub commands: flexcore_client::Client,
    /// This runner's identity: signs heartbeats and log lines.
    pub identity: Identity,
    /// The identities file: work items, definitions and cancellations count only when the
    /// command service signed them, heartbeats only when a runner did.
    pub trust: Trust,
}

enum Refusal {
    /// Our attempt is no longer the current one, or the run is over: stop quietly.
    Fenced(String),
    /// Refused for a rule of its content (`validation_failed`, `payload_too_large`, …):
    /// sending it again cannot help, and the attempt must fail saying why.
    Rejected(String),
    /// No answer (service down, given up): try the work again later.
    Transient(String),
}

/// Sends `body` with `command_id` until answered as `retry` allows. A `conflict`,
/// `invalid_state` or `not_found` means the attempt is fenced off or the run is over; any
/// other refusal is about what was sent (e.g. a STATE over the size limit).
async fn send<C: CommandBody>(
    ctx: &Context,
    item: &WorkItem,
    body: &C,
    key: &str,
    retry: Retry,
) -> Result<(), Refusal> {
    let mut send = ctx.commands.command(body).id(command_id(item.run_id, key)).retry(retry);
    if let Some(correlation) = &item.correlation_id {
        send = send.correlation(correlation.clone());
    }
    match send.send().await {
        Ok(_) => Ok(()),
        Err(ClientError::Refused { error, .. }) => {
            if matches!(
                error.code,
                ErrorCode::Conflict | ErrorCode::InvalidState | ErrorCode::NotFound
            ) {
                Err(Refusal::Fenced(format!("{}: {error}", C::NAME)))
            } else {
                tracing::error!(command = C::NAME, %error, "command refused for its content");
                Err(Refusal::Rejected(format!("{} refused: {error}", C::NAME)))
            }
        }
        Err(other) => Err(Refusal::Transient(other.to_string())),
    }
}

/// Handles one work message; the slot permit is released when it returns.
pub async fn process(ctx: Arc<Context>, message: jetstream::Message, _slot: OwnedSemaphorePermit) {
    if let Err(error) = ctx.trust.verify_message(&message, &[Role::Command], None) {
        // Not put there by the relay: never run, never delivered again.
        tracing::error!(%error, subject = %message.subject, "unverified work item terminated");
        let _ = message.ack_with(AckKind::Term).await;
        return;
    }
    let item: WorkItem = match serde_json::from_slice(&message.payload) {
        Ok(item) => item,
        Err(error) => {
            tracing::error!(%error, "malformed work item terminated");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let span = tracing::info_span!("run.attempt", run_id = %item.run_id, attempt = item.attempt);
    // A child of the relay's publish of the work item (its `traceparent`): the run joins
    // the trace of the command that requested it.
    propagation::set_parent(&span, message.headers.as_ref());
    attempt(ctx, message, item).instrument(span).await;
}

/// Claims, runs and reports one work item.
async fn attempt(ctx: Arc<Context>, message: jetstream::Message, item: WorkItem) {
    let redelivered = message.info().map(|i| i.delivered > 1).unwrap_or(false);
    // Listen for cancellation before claiming, so a cancel right after the claim is not missed.
    let cancel = ctx.shutdown.child_token();
    let Ok(run_events) = ctx
        .client
        .subscribe(subjects::events_of_aggregate("run", item.run_id))
        .await
    else {
        let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(2)))).await;
        return;
    };
    let Ok(runner_id) = ctx.runner_id.parse::<Label>() else {
        tracing::error!(runner_id = %ctx.runner_id, "runner id is not a valid label; work handed back");
        let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(2)))).await;
        return;
    };
    let claim = ClaimRun {
        run_id: item.run_id,
        attempt: item.attempt,
        runner_id,
        lease_seconds: ctx.lease.as_secs().max(1),
    };
    // One claim per handling of an item: the id is the same for every try of this
    // handling (a lost reply is answered with the stored one) and new for any other. Were
    // it derived from the item alone, an item handed out again to the same runner (its
    // acknowledgement lost in a NATS outage, or a consumer's state rolled back by a server
    // crash, which resets the delivery count too) would get its first, accepted, claim
    // answered again and a finished attempt would run a second time. As a new command it
    // is refused (the attempt is no longer pending): the item is dropped, or a lapsed
    // attempt timed out below. A claim committed whose every reply was lost costs that
    // attempt (its lease lapses and it is retried); it never runs twice.
    let key = format!("claim:{}:{}:{}", item.attempt, ctx.runner_id, uuid::Uuid::new_v4());
    match send(
        &ctx,
        &item,
        &claim,
        &key,
        Retry::default().stopping_at(ctx.shutdown.clone()),
    )
    .await
    {
        Ok(()) => {}
        Err(Refusal::Rejected(why)) => {
            tracing::error!(%why, "claim refused; work dropped");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
        Err(Refusal::Fenced(why)) => {
            if redelivered && !holder_alive(&ctx, &item).await {
                // The lease of whoever claimed it lapsed (JetStream redelivered the work):
                // time that attempt out, fenced by the attempt number, so racing runners or
                // the scheduler record one timeout. The scheduler retries it after back-off.
                let timed_out = TimeOutRun {
                    run_id: item.run_id,
                    attempt: item.attempt,
                    reason: TimeoutReason::LeaseExpired,
                };
                // The scheduler derives the same id for the same time-out: one is applied.
                let key = format!("time_out:{}:{:?}", item.attempt, TimeoutReason::LeaseExpired);
                let retry = Retry::default().stopping_at(ctx.shutdown.clone());
                if send(&ctx, &item, &timed_out, &key, retry).await.is_ok() {
                    tracing::warn!("previous holder's lease lapsed; attempt timed out");
                }
            }
            tracing::info!(%why, "attempt not claimable; work dropped");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
        Err(Refusal::Transient(why)) => {
            tracing::warn!(%why, "claim failed; work will be redelivered");
            let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(2)))).await;
            return;
        }
    }
    let beat = RunHeartbeat {
        run_id: item.run_id,
        attempt: item.attempt,
        runner_id: ctx.runner_id.clone(),
    };
    // Not stopped by `cancel` (which ends the plugins): the lease is held until the outcome
    // is reported, then the task is aborted.
    let heartbeat = tokio::spawn(heartbeat(
        ctx.client.clone(),
        ctx.identity.clone(),
        message.clone(),
        beat,
        ctx.lease,
    ));
    let watch = tokio::spawn(watch_cancellation(run_events, ctx.trust.clone(), cancel.clone()));
    let outcome = run_attempt(&ctx, &item, cancel.clone()).await;
    cancel.cancel();
    watch.abort();
    // The heartbeat keeps the lease until the outcome is committed: an outage of the
    // command service must not let the finished attempt's lease lapse (and the work run
    // again) while the outcome waits to be reported.
    let until_answered = Retry::until_stopped(ctx.abandon.clone());
    let report = match outcome {
        Ok(counters) => {
            let succeed = SucceedRun {
                run_id: item.run_id,
                attempt: item.attempt,
                counters,
            };
            send(
                &ctx,
                &item,
                &succeed,
                &format!("succeed:{}", item.attempt),
                until_answered,
            )
            .await
        }
        Err(_) if ctx.shutdown.is_cancelled() => {
            // Leave the attempt to lease expiry: the next runner times it out and retries.
            heartbeat.abort();
            let _ = message.ack_with(AckKind::Nak(None)).await;
            return;
        }
        Err(Failure {
            error,
            retryable,
            counters,
        }) if error.code != "cancelled" && error.code != "fenced" => {
            tracing::warn!(code = %error.code, message = %error.message, "attempt failed");
            let fail = FailRun {
                run_id: item.run_id,
                attempt: item.attempt,
                error,
                retryable,
                counters,
            };
            send(&ctx, &item, &fail, &format!("fail:{}", item.attempt), until_answered).await
        }
        Err(_) => Ok(()),
    };
    let report = match report {
        // The outcome itself was refused for its content (e.g. counters over a limit):
        // the attempt fails saying so, for good (the same data would be refused again),
        // rather than being left to lease expiry and run again.
        Err(Refusal::Rejected(why)) => {
            let fail = FailRun {
                run_id: item.run_id,
                attempt: item.attempt,
                error: failure("outcome_refused", why, None, false).error,
                retryable: false,
                counters: StreamCounters::new(),
            };
            let retry = Retry::until_stopped(ctx.abandon.clone());
            send(&ctx, &item, &fail, &format!("fail-refused:{}", item.attempt), retry).await
        }
        other => other,
    };
    heartbeat.abort();
    if let Err(Refusal::Transient(why)) = &report {
        tracing::error!(%why, "could not report the outcome before giving up; the lease will expire and the attempt be retried");
        return;
    }
    let _ = message.double_ack().await;
}

struct Failure {
    error: RunError,
    retryable: bool,
    counters: StreamCounters,
}

fn failure(code: &str, message: String, step: Option<usize>, retryable: bool) -> Failure {
    Failure {
        error: RunError::new(code, &message, step.and_then(|s| u32::try_from(s).ok())),
        retryable,
        counters: StreamCounters::new(),
    }
}

/// How long an attempt waits for its definition through NATS errors (a reconnection, a
/// stream leader elected again after a node died: 6–7 s in the cluster test, on top of a
/// request that timed out) and for the relay to publish its claim. The lease is kept alive
/// meanwhile, so waiting is cheaper than spending one of the run's attempts on an outage.
const DEFINITION_WAIT: Duration = Duration::from_secs(60);

async fn run_attempt(ctx: &Context, item: &WorkItem, cancel: CancellationToken) -> Result<StreamCounters, Failure> {
    let load = definition::load(&ctx.js, &ctx.trust, item.run_id, item.attempt, DEFINITION_WAIT);
    // A shutdown ends the wait (the item goes back); a cancellation of the run does not:
    // the plugins then start on a cancelled token and end at once, each execution counted
    // as cancelled like any other.
    let def = tokio::select! {
        def = load => def,
        () = ctx.shutdown.cancelled() => {
            return Err(failure(
                executor::code::CANCELLED,
                "stopped before the attempt's definition was read".to_owned(),
                None,
                true,
            ))
        }
    }
    .map_err(|e| match e {
        // Someone forged a message into the stream: the run must not use it, and
        // trying again reads the same message.
        definition::DefinitionError::Unverified { .. } => failure("unverified_definition", e.to_string(), None, false),
        e => failure("definition", e.to_string(), None, true),
    })?;
    let stages = stages(ctx, &def).await?;
    let resume: Option<OpaqueJson> = (!def.claimed.resume_state.is_null()).then(|| def.claimed.resume_state.clone());
    let (events_tx, mut events) = mpsc::channel(1024);
    let exec = executor::execute(&ctx.sandbox, stages, resume, events_tx, cancel.clone());
    tokio::pin!(exec);
    let plugins: Vec<String> = def
        .plugins
        .iter()
        .map(|p| format!("{}@{}", p.name, p.version))
        .collect();
    let mut stopped = None;
    let mut delivered = StreamCounters::new();
    let mut checkpoints = Checkpoints::default();
    let result = loop {
        tokio::select! {
            result = &mut exec => break result,
            Some(event) = events.recv() => {
                super::metrics::observe(&event, &mut delivered);
                // A checkpoint is retried until answered (or the shutdown grace is over),
                // also once the plugins are being stopped: what they loaded is kept.
                if stopped.is_none() {
                    if let Err(stop) = on_event(ctx, item, &plugins, event, &mut checkpoints, &ctx.abandon).await {
                        stopped = Some(stop);
                        cancel.cancel();
                    }
                }
            }
        }
    };
    // Checkpoints still queued were produced before the end: commit them in order. The
    // plugins are done, so these wait for the command service as long as the outcome
    // does (until the shutdown grace is over), not only until a shutdown begins: a
    // succeeded run whose last STATE was not committed would load records again next time.
    while let Ok(event) = events.try_recv() {
        super::metrics::observe(&event, &mut delivered);
        if stopped.is_none() {
            if let Err(stop) = on_event(ctx, item, &plugins, event, &mut checkpoints, &ctx.abandon).await {
                stopped = Some(stop);
            }
        }
    }
    // A checkpoint the executor could not queue (the channel was full while an earlier one
    // waited for the command service) is not lost: the loader's last STATE is committed
    // before the outcome.
    if let (Ok(summary), None) = (&result, &stopped) {
        if let Some(state) = summary
            .last_state
            .clone()
            .filter(|s| checkpoints.last.as_ref() != Some(s))
        {
            let last = ExecEvent::Checkpoint {
                state,
                counters: summary.counters.clone(),
            };
            if let Err(stop) = on_event(ctx, item, &plugins, last, &mut checkpoints, &ctx.abandon).await {
                stopped = Some(stop);
            }
        }
    }
    super::metrics::attempt_finished(&def, &result, &delivered);
    match stopped {
        Some(Stopped::Fenced(why)) => return Err(failure("fenced", why, None, false)),
        Some(Stopped::Rejected(why)) => return Err(failure("checkpoint_refused", why, None, false)),
        // Never reported as succeeded: the item goes back (shutdown) or the lease lapses.
        Some(Stopped::Uncommitted(why)) => return Err(failure("checkpoint_uncommitted", why, None, true)),
        None => {}
    }
    // The executor has scrubbed the secrets from the counters and the message already.
    result.map(|summary| summary.counters).map_err(
        |ExecFailure {
             code,
             message,
             step,
             retryable,
             ..
         }| Failure {
            error: RunError::new(code, &message, step.and_then(|s| u32::try_from(s).ok())),
            retryable,
            counters: StreamCounters::new(),
        },
    )
}

/// The checkpoints an attempt has sent: how many (each one's number is part of its
/// command id) and the last STATE committed.
#[derive(Default)]
struct Checkpoints {
    sequence: u64,
    last: Option<OpaqueJson>,
}

/// Why an attempt stops sending checkpoints.
enum Stopped {
    /// Fenced off (another attempt is current, or the run is over).
    Fenced(String),
    /// A checkpoint was refused for its content: the attempt fails, for good.
    Rejected(String),
    /// A checkpoint could not be committed before `stop`: the attempt must not be
    /// reported as succeeded.
    Uncommitted(String),
}

/// Commits a checkpoint or ships a log line (both scrubbed of secrets by the executor);
/// `Err` when the attempt can commit no more. A checkpoint is retried until committed (or
/// `stop`).
async fn on_event(
    ctx: &Context,
    item: &WorkItem,
    plugins: &[String],
    event: ExecEvent,
    checkpoints: &mut Checkpoints,
    stop: &CancellationToken,
) -> Result<(), Stopped> {
    match event {
        ExecEvent::Checkpoint { state, counters } => {
            checkpoints.sequence += 1;
            let checkpoint = CheckpointRun {
                run_id: item.run_id,
                attempt: item.attempt,
                state,
                counters,
            };
            let key = format!("checkpoint:{}:{}", item.attempt, checkpoints.sequence);
            let retry = Retry::until_stopped(stop.clone());
            match send(ctx, item, &checkpoint, &key, retry).await {
                Ok(()) => {
                    checkpoints.last = Some(checkpoint.state);
                    Ok(())
                }
                Err(Refusal::Fenced(why)) => Err(Stopped::Fenced(why)),
                Err(Refusal::Rejected(why)) => Err(Stopped::Rejected(why)),
                Err(Refusal::Transient(why)) => {
                    tracing::warn!(%why, "checkpoint not committed: the attempt was stopped");
                    Err(Stopped::Uncommitted(why))
                }
            }
        }
        ExecEvent::Log { step, line, .. } => {
            let log = RunLogLine {
                run_id: item.run_id,
                attempt: item.attempt,
                step,
                plugin: plugins.get(step).cloned().unwrap_or_default(),
                line,
                at: chrono::Utc::now(),
            };
            if let Ok(body) = serde_json::to_vec(&log) {
                let subject = subjects::run_logs(item.run_id);
                let headers = ctx.identity.signed_headers(&subject, &body);
                let _ = ctx.client.publish_with_headers(subject, headers, body.into()).await;
            }
            Ok(())
        }
    }
}

async fn stages(ctx: &Context, def: &AttemptDefinition) -> Result<Vec<Stage>, Failure> {
    let mut stages = Vec::with_capacity(def.plugins.len());
    for (i, (step, plugin)) in def.requested.definition.steps.iter().zip(&def.plugins).enumerate() {
        if let Some(name) = ctx.plugin_env_allow.refused(&plugin.grants.env) {
            // `sandbox`, not retryable: the grants are at fault (docs/messaging.md).
            return Err(failure(
                executor::code::SANDBOX,
                format!(
                    "step {i} ({}): the plugin is granted the environment variable {name}, which this runner does not pass to plugins: an operator may add it to runner.plugin_env_allow, or register the plugin without that grant",
                    step.plugin
                ),
                Some(i),
                false,
            ));
        }
        let (config, values) = secrets::resolve(step.config.as_str(), &ctx.secrets)
            .map_err(|e| failure("secret", format!("step {i} ({}): {e}", step.plugin), Some(i), false))?;
        let program = match step.runtime {
            PluginRuntime::Wasm => {
                let digest = step.module_digest.clone().ok_or_else(|| {
                    failure(
                        "definition",
                        format!("step {i} ({}) has no module digest", step.plugin),
                        Some(i),
                        false,
                    )
                })?;
                module(ctx, &digest).await.map_err(|e| {
                    let what = format!("step {i} ({}): {e}", step.plugin);
                    match e {
                        flexcore_plugin_store::PluginStoreError::TooLarge { .. } => {
                            failure(executor::code::MODULE_LIMIT, what, Some(i), false)
                        }
                        // The store could not be reached: another attempt (or runner) may.
                        flexcore_plugin_store::PluginStoreError::Nats { .. } => {
                            failure(executor::code::SANDBOX, what, Some(i), true)
                        }
                        // Missing or corrupt: permanent until someone registers it again.
                        _ => failure("digest", what, Some(i), false),
                    }
                })?
            }
            PluginRuntime::Process => Program::Process {
                executable: plugin.executable.clone().unwrap_or_default().into(),
                args: Vec::new(),
            },
        };
        stages.push(Stage {
            name: step.plugin.to_string(),
            kind: step.kind,
            program,
            config: OpaqueJson::parse(&config).map_err(|e| {
                failure(
                    "definition",
                    format!("step {i} ({}): config: {e}", step.plugin),
                    Some(i),
                    false,
                )
            })?,
            limits: plugin.limits.clone(),
            grants: plugin.grants.clone(),
            secrets: Secrets::new(values),
        });
    }
    Ok(stages)
}

/// The module for `digest`: the compiled one when the sandbox holds it (nothing is
/// downloaded), else its bytes, downloaded within the size limit and dropped once compiled.
async fn module(ctx: &Context, digest: &Digest) -> Result<Program, flexcore_plugin_store::PluginStoreError> {
    if let Some(compiled) = ctx.sandbox.modules().get(digest.as_str()) {
        return Ok(Program::Compiled(compiled));
    }
    let limit = ctx.sandbox.modules().limits().max_module_bytes;
    let bytes = flexcore_plugin_store::download_at_most(&ctx.js, digest, limit).await?;
    Ok(Program::Wasm {
        bytes: bytes.into(),
        digest: digest.to_string(),
    })
}

/// Whether the runner holding `item`'s attempt still heartbeats: listened to for half a
/// lease (heartbeats come every third of one). An item is also redelivered when only its
/// AckProgress was lost (a NATS outage, a partition) while its holder works on; timing
/// that attempt out would throw finished work away and run it again.
async fn holder_alive(ctx: &Context, item: &WorkItem) -> bool {
    let Ok(mut beats) = ctx.client.subscribe(subjects::run_heartbeat(item.run_id)).await else {
        return false;
    };
    let listen = async {
        while let Some(message) = beats.next().await {
            let signed = ctx
                .trust
                .verify_message(&message, &[Role::Runner], Some(PRESENCE_FRESHNESS));
            if signed.is_ok()
                && serde_json::from_slice::<RunHeartbeat>(&message.payload).is_ok_and(|b| b.attempt == item.attempt)
            {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(ctx.lease / 2, listen).await.unwrap_or(false)
}

/// Keeps the lease: AckProgress well within AckWait (so JetStream does not redeliver) and a
/// heartbeat for the schedulers (so they do not time the attempt out).
async fn heartbeat(
    client: async_nats::Client,
    identity: Identity,
    message: jetstream::Message,
    beat: RunHeartbeat,
    lease: Duration,
) {
    let every = (lease / 3).max(Duration::from_millis(200));
    let subject = subjects::run_heartbeat(beat.run_id);
    let body: bytes::Bytes = serde_json::to_vec(&beat).unwrap_or_default().into();
    loop {
        tokio::time::sleep(every).await;
        if let Err(error) = message.ack_with(AckKind::Progress).await {
            tracing::warn!(%error, "heartbeat failed");
        }
        // Signed afresh each time: receivers accept only recent signatures.
        let headers = identity.signed_headers(&subject, &body);
        if let Err(error) = client
            .publish_with_headers(subject.clone(), headers, body.clone())
            .await
        {
            tracing::warn!(%error, "heartbeat not published");
        }
    }
}

/// Cancels the attempt when the run is cancelled or timed out by command (an event the
/// relay signed; anything else on the subject is ignored).
async fn watch_cancellation(mut events: async_nats::Subscriber, trust: Trust, cancel: CancellationToken) {
    while let Some(m) = events.next().await {
        if !(m.subject.ends_with(".cancelled") || m.subject.ends_with(".timed_out")) {
            continue;
        }
        if let Err(error) = trust.verify_message(&m, &[Role::Command], None) {
            tracing::warn!(%error, subject = %m.subject, "unverified cancellation ignored");
            continue;
        }
        tracing::info!("run cancelled by command; stopping plugins");
        cancel.cancel();
        return;
    }
}
