//! One work item: claim the attempt, run it, report every checkpoint and the outcome.
//! The attempt number is the fencing token: as soon as the command service refuses one of
//! our commands as stale, this attempt stops and reports nothing more.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use flexcore_contracts::model::{PluginRuntime, RunError, StreamCounters};
use flexcore_contracts::values::Digest;
use flexcore_contracts::work::{RunHeartbeat, RunLogLine, WorkItem};
use flexcore_contracts::{subjects, CommandReply, ErrorCode};
use flexcore_telemetry::propagation;
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::definition::{self, AttemptDefinition};
use super::secrets::{self, SecretSource};
use crate::executor::{self, ExecEvent, ExecFailure, Program, Stage};
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
    /// Module bytes by digest, so a module is downloaded once.
    pub modules: Mutex<HashMap<Digest, Arc<[u8]>>>,
    /// Cancelled on runner shutdown.
    pub shutdown: CancellationToken,
}

enum Refusal {
    /// Our attempt is no longer the current one, or the run is over: stop quietly.
    Fenced(String),
    /// Transient (service down): try the work again later.
    Transient(String),
}

async fn send(ctx: &Context, command: &str, body: Value) -> Result<(), Refusal> {
    let (aggregate, action) = command.split_once('.').unwrap_or((command, ""));
    let payload = serde_json::to_vec(&body).map_err(|e| Refusal::Transient(e.to_string()))?;
    let subject = subjects::command(aggregate, action);
    // The attempt's trace context, so the command service continues the run's trace.
    let reply = match propagation::headers(&tracing::Span::current()) {
        Some(headers) => ctx.client.request_with_headers(subject, headers, payload.into()).await,
        None => ctx.client.request(subject, payload.into()).await,
    }
    .map_err(|e| Refusal::Transient(format!("{command}: {e}")))?;
    match serde_json::from_slice::<CommandReply>(&reply.payload) {
        Ok(CommandReply::Accepted(_)) => Ok(()),
        Ok(CommandReply::Rejected(r)) => match r.error.code {
            ErrorCode::Conflict | ErrorCode::InvalidState | ErrorCode::NotFound => {
                Err(Refusal::Fenced(format!("{command}: {}", r.error)))
            }
            _ => Err(Refusal::Transient(format!("{command}: {}", r.error))),
        },
        Err(e) => Err(Refusal::Transient(format!("{command}: unreadable reply: {e}"))),
    }
}

/// Handles one work message; the slot permit is released when it returns.
pub async fn process(ctx: Arc<Context>, message: jetstream::Message, _slot: OwnedSemaphorePermit) {
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
    let claim = json!({"run_id": item.run_id, "attempt": item.attempt, "runner_id": ctx.runner_id, "lease_seconds": ctx.lease.as_secs().max(1)});
    match send(&ctx, "run.claim", claim).await {
        Ok(()) => {}
        Err(Refusal::Fenced(why)) => {
            if redelivered {
                // The lease of whoever claimed it lapsed (JetStream redelivered the work):
                // time that attempt out, fenced by the attempt number, so racing runners or
                // the scheduler record one timeout. The scheduler retries it after back-off.
                let timed_out = json!({"run_id": item.run_id, "attempt": item.attempt, "reason": "lease_expired"});
                if send(&ctx, "run.time_out", timed_out).await.is_ok() {
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
    let heartbeat = tokio::spawn(heartbeat(
        ctx.client.clone(),
        message.clone(),
        beat,
        ctx.lease,
        cancel.clone(),
    ));
    let watch = tokio::spawn(watch_cancellation(run_events, cancel.clone()));
    let outcome = run_attempt(&ctx, &item, cancel.clone()).await;
    cancel.cancel();
    heartbeat.abort();
    watch.abort();
    let report = match outcome {
        Ok(counters) => {
            send(
                &ctx,
                "run.succeed",
                json!({"run_id": item.run_id, "attempt": item.attempt, "counters": counters}),
            )
            .await
        }
        Err(_) if ctx.shutdown.is_cancelled() => {
            // Leave the attempt to lease expiry: the next runner times it out and retries.
            let _ = message.ack_with(AckKind::Nak(None)).await;
            return;
        }
        Err(Failure {
            error,
            retryable,
            counters,
        }) if error.code != "cancelled" && error.code != "fenced" => {
            tracing::warn!(code = %error.code, message = %error.message, "attempt failed");
            send(&ctx, "run.fail", json!({"run_id": item.run_id, "attempt": item.attempt, "error": error, "retryable": retryable, "counters": counters})).await
        }
        Err(_) => Ok(()),
    };
    if let Err(Refusal::Transient(why)) = &report {
        tracing::error!(%why, "could not report the outcome; the lease will expire and the attempt be retried");
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
        error: RunError {
            code: code.to_owned(),
            message,
            step: step.and_then(|s| u32::try_from(s).ok()),
        },
        retryable,
        counters: StreamCounters::new(),
    }
}

async fn run_attempt(ctx: &Context, item: &WorkItem, cancel: CancellationToken) -> Result<StreamCounters, Failure> {
    let def = definition::load(&ctx.js, item.run_id, item.attempt, Duration::from_secs(10))
        .await
        .map_err(|e| failure("definition", e.to_string(), None, true))?;
    let (stages, revealed) = stages(ctx, &def).await?;
    let resume = (!def.claimed.resume_state.is_null()).then(|| def.claimed.resume_state.clone());
    let (events_tx, mut events) = mpsc::channel(1024);
    let exec = executor::execute(&ctx.sandbox, stages, resume, events_tx, cancel.clone());
    tokio::pin!(exec);
    let plugins: Vec<String> = def
        .plugins
        .iter()
        .map(|p| format!("{}@{}", p.name, p.version))
        .collect();
    let mut fenced = None;
    let mut delivered = StreamCounters::new();
    let result = loop {
        tokio::select! {
            result = &mut exec => break result,
            Some(event) = events.recv() => {
                super::metrics::observe(&event, &mut delivered);
                if let Some(why) = on_event(ctx, item, &plugins, &revealed, event).await {
                    fenced.get_or_insert(why);
                    cancel.cancel();
                }
            }
        }
    };
    // Checkpoints still queued were produced before the end: commit them in order.
    while let Ok(event) = events.try_recv() {
        super::metrics::observe(&event, &mut delivered);
        if let Some(why) = on_event(ctx, item, &plugins, &revealed, event).await {
            fenced.get_or_insert(why);
        }
    }
    super::metrics::attempt_finished(&def, &result, &delivered);
    if let Some(why) = fenced {
        return Err(failure("fenced", why, None, false));
    }
    result.map(|summary| summary.counters).map_err(
        |ExecFailure {
             code,
             message,
             step,
             retryable,
             ..
         }| Failure {
            error: RunError {
                code,
                message: secrets::scrub(&message, &revealed),
                step: step.and_then(|s| u32::try_from(s).ok()),
            },
            retryable,
            counters: StreamCounters::new(),
        },
    )
}

/// Commits a checkpoint or ships a log line; `Some(reason)` when our attempt is fenced off.
async fn on_event(
    ctx: &Context,
    item: &WorkItem,
    plugins: &[String],
    revealed: &[String],
    event: ExecEvent,
) -> Option<String> {
    match event {
        ExecEvent::Checkpoint { state, counters } => {
            let body = json!({"run_id": item.run_id, "attempt": item.attempt, "state": state, "counters": counters});
            match send(ctx, "run.checkpoint", body).await {
                Ok(()) => None,
                Err(Refusal::Fenced(why)) => Some(why),
                Err(Refusal::Transient(why)) => {
                    // The next checkpoint carries a later state; losing this one loses no data.
                    tracing::warn!(%why, "checkpoint not committed");
                    None
                }
            }
        }
        ExecEvent::Log { step, line, .. } => {
            let log = RunLogLine {
                run_id: item.run_id,
                attempt: item.attempt,
                step,
                plugin: plugins.get(step).cloned().unwrap_or_default(),
                line: secrets::scrub(&line, revealed),
                at: chrono::Utc::now(),
            };
            if let Ok(body) = serde_json::to_vec(&log) {
                let _ = ctx.client.publish(subjects::run_logs(item.run_id), body.into()).await;
            }
            None
        }
    }
}

async fn stages(ctx: &Context, def: &AttemptDefinition) -> Result<(Vec<Stage>, Vec<String>), Failure> {
    let mut stages = Vec::with_capacity(def.plugins.len());
    let mut revealed = Vec::new();
    for (i, (step, plugin)) in def.requested.definition.steps.iter().zip(&def.plugins).enumerate() {
        let (config, mut values) = secrets::resolve(&Value::Object(step.config.clone()), &ctx.secrets)
            .map_err(|e| failure("secret", format!("step {i} ({}): {e}", step.plugin), Some(i), false))?;
        revealed.append(&mut values);
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
                Program::Wasm {
                    bytes: module(ctx, &digest)
                        .await
                        .map_err(|e| failure("digest", format!("step {i} ({}): {e}", step.plugin), Some(i), false))?,
                    digest: digest.to_string(),
                }
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
            config,
            limits: plugin.limits.clone(),
            grants: plugin.grants.clone(),
        });
    }
    Ok((stages, revealed))
}

async fn module(ctx: &Context, digest: &Digest) -> Result<Arc<[u8]>, flexcore_plugin_store::PluginStoreError> {
    if let Some(bytes) = ctx.modules.lock().get(digest).cloned() {
        return Ok(bytes);
    }
    let bytes: Arc<[u8]> = flexcore_plugin_store::download(&ctx.js, digest).await?.into();
    ctx.modules.lock().insert(digest.clone(), bytes.clone());
    Ok(bytes)
}

/// Keeps the lease: AckProgress well within AckWait (so JetStream does not redeliver) and a
/// heartbeat for the schedulers (so they do not time the attempt out).
async fn heartbeat(
    client: async_nats::Client,
    message: jetstream::Message,
    beat: RunHeartbeat,
    lease: Duration,
    stop: CancellationToken,
) {
    let every = (lease / 3).max(Duration::from_millis(200));
    let subject = subjects::run_heartbeat(beat.run_id);
    let body: bytes::Bytes = serde_json::to_vec(&beat).unwrap_or_default().into();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {
                if let Err(error) = message.ack_with(AckKind::Progress).await {
                    tracing::warn!(%error, "heartbeat failed");
                }
                if let Err(error) = client.publish(subject.clone(), body.clone()).await {
                    tracing::warn!(%error, "heartbeat not published");
                }
            }
        }
    }
}

/// Cancels the attempt when the run is cancelled or timed out by command.
async fn watch_cancellation(mut events: async_nats::Subscriber, cancel: CancellationToken) {
    while let Some(m) = events.next().await {
        if m.subject.ends_with(".cancelled") || m.subject.ends_with(".timed_out") {
            tracing::info!("run cancelled by command; stopping plugins");
            cancel.cancel();
            return;
        }
    }
}
