//! The load: clients sending commands at a steady pace, each command with a deterministic
//! `command_id` and retried with that id until it is answered, every outcome written to a
//! [`Ledger`] that the checks hold the event log to.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flexcore_client::{command_id, ClientError, Retry};
use flexcore_contracts::commands::{
    encode, CancelRun, CommandBody, CommandMeta, CommitPipelineState, CreatePipeline, CreateSchedule, PausePipeline,
    PauseSchedule, RequestRun, ResumePipeline, ResumeSchedule, UpdatePipeline,
};
use flexcore_contracts::reply::Accepted;
use flexcore_contracts::ErrorBody;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How one command ended for its sender.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Accepted: its events are committed (this is the acknowledgement the log must keep).
    Accepted(Accepted),
    /// Refused (final): it must have written nothing.
    Refused(ErrorBody),
    /// No answer before the test's hard deadline: a failure of the system under test.
    Unanswered(String),
}

/// One command sent.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Its idempotency key.
    pub command_id: Uuid,
    /// `pipeline.create`, …
    pub name: &'static str,
    /// The exact body sent (with the `command_id`), for sending it again.
    pub payload: Bytes,
    /// How it ended.
    pub outcome: Outcome,
    /// From the first try to the answer.
    pub took: Duration,
}

/// Every command the test sent, in the order answered.
#[derive(Debug, Clone, Default)]
pub struct Ledger(Arc<Mutex<Vec<Sent>>>);

impl Ledger {
    fn push(&self, sent: Sent) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(sent);
    }

    /// A copy of every entry so far.
    pub fn entries(&self) -> Vec<Sent> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Sends commands through the typed client, retrying until answered or `deadline`.
#[derive(Clone)]
pub struct Sender {
    /// The typed client (short per-try timeout, so a dead replica costs little).
    pub api: flexcore_client::Client,
    /// Where outcomes go.
    pub ledger: Ledger,
    /// The hard deadline: a command unanswered by then is recorded as unanswered.
    pub deadline: CancellationToken,
}

impl Sender {
    /// Sends `body` with `id` until answered; records and returns the outcome.
    pub async fn send<C: CommandBody>(&self, body: &C, id: Uuid) -> Outcome {
        self.send_with(body, id, Retry::until_stopped(self.deadline.clone()))
            .await
    }

    /// Like [`Self::send`] with a retry policy of the caller's.
    pub async fn send_with<C: CommandBody>(&self, body: &C, id: Uuid, retry: Retry) -> Outcome {
        let meta = CommandMeta {
            command_id: Some(id),
            ..CommandMeta::default()
        };
        let payload = Bytes::from(encode(body, &meta).unwrap());
        let started = Instant::now();
        let outcome = match self.api.command(body).id(id).retry(retry).send().await {
            Ok(accepted) => Outcome::Accepted(accepted),
            Err(ClientError::Refused { error, .. }) => Outcome::Refused(error),
            Err(other) => Outcome::Unanswered(other.to_string()),
        };
        self.ledger.push(Sent {
            command_id: id,
            name: C::NAME,
            payload,
            outcome: outcome.clone(),
            took: started.elapsed(),
        });
        outcome
    }
}

/// A typed command body from JSON (the test writes bodies as the contract shows them).
pub fn body<C: CommandBody>(value: serde_json::Value) -> C {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{}: {e}: {value}", C::NAME))
}

/// The plugins every chaos pipeline runs: the logging tap (a process plugin) and the
/// wasm JSONL loader.
pub const TAP: &str = "chaos-tap@1.0.0";
/// See [`TAP`].
pub const LOADER: &str = "jsonl@1.0.0";

/// `pipeline.create` of pipeline `name` (its tap logs `name` with every execution).
pub fn create_pipeline(id: Uuid, name: &str, max_active_runs: u32) -> CreatePipeline {
    create_slow_pipeline(id, name, max_active_runs, 0.3)
}

/// [`create_pipeline`] whose tap pauses `pause` seconds before its STATE.
pub fn create_slow_pipeline(id: Uuid, name: &str, max_active_runs: u32, pause: f64) -> CreatePipeline {
    body(json!({
        "pipeline_id": id, "name": name, "owner": "chaos", "tags": ["chaos"],
        "max_active_runs": max_active_runs,
        "retry": {"max_attempts": 20, "initial_backoff_seconds": 1, "max_backoff_seconds": 2},
        "run_timeout_seconds": 900,
        "steps": [
            {"plugin": TAP, "config": {"tag": name, "records": 20, "pause": pause}},
            {"plugin": LOADER, "config": {"directory": format!("/out/{name}")}},
        ],
    }))
}

/// `pipeline.commit_state` of `state`, a JSON text kept exactly as written.
pub fn commit_state(pipeline: Uuid, state: &str) -> CommitPipelineState {
    let text = format!(r#"{{"pipeline_id":"{pipeline}","state":{state}}}"#);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A STATE a float would change: the log, the stream and the views must keep its text.
fn exact_state(client: usize, n: u64) -> String {
    format!(r#"{{"z":{n},"client":{client},"big":123456789012345678901234567890,"f":0.30000000000000004441}}"#)
}

/// One load client: its own pipelines and schedule, a command every `pace`, until `stop`.
pub struct Client {
    /// Its number (names and ids derive from it).
    pub index: usize,
    /// How it sends.
    pub sender: Sender,
    /// The time between two commands.
    pub pace: Duration,
    /// Most pipelines it creates.
    pub max_pipelines: usize,
    /// The cron of its schedule.
    pub cron: String,
}

impl Client {
    /// Sends commands until `stop`; returns how many it sent.
    pub async fn run(self, stop: CancellationToken) -> u64 {
        let scope = Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("flexcore-chaos-client-{}", self.index).as_bytes(),
        );
        let id = |key: String| command_id(scope, &key);
        let mut rng = StdRng::seed_from_u64(self.index as u64);
        let mut pipelines: Vec<Uuid> = Vec::new();
        let mut paused: Option<Uuid> = None;
        let mut last_run: Option<Uuid> = None;
        let schedule = id("schedule".into());
        let mut schedule_state = None::<bool>; // Some(paused?)
        let mut tick = tokio::time::interval(self.pace);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        while !stop.is_cancelled() {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let s = &self.sender;
            let key = format!("op:{n}");
            if pipelines.is_empty() || (n.is_multiple_of(10) && pipelines.len() < self.max_pipelines) {
                let pipeline = id(format!("pipeline:{}", pipelines.len()));
                let name = format!("c{}-p{}", self.index, pipelines.len());
                if let Outcome::Accepted(_) = s.send(&create_pipeline(pipeline, &name, 2), id(key)).await {
                    pipelines.push(pipeline);
                }
                n += 1;
                continue;
            }
            let pipeline = pipelines[rng.random_range(0..pipelines.len())];
            match n % 20 {
                // Runs: the pipeline's two slots may be taken (a `conflict`), or it may be
                // paused (`invalid_state`): both are answers.
                1 | 4 | 7 | 11 | 14 | 17 => {
                    let run = id(format!("run:{n}"));
                    let request: RequestRun = body(json!({"run_id": run, "pipeline_id": pipeline}));
                    if let Outcome::Accepted(_) = s.send(&request, id(key)).await {
                        last_run = Some(run);
                    }
                }
                2 | 5 | 8 | 12 | 15 | 18 => {
                    s.send(&commit_state(pipeline, &exact_state(self.index, n)), id(key))
                        .await;
                }
                3 => {
                    let update: UpdatePipeline =
                        body(json!({"pipeline_id": pipeline, "description": format!("op {n}")}));
                    s.send(&update, id(key)).await;
                }
                9 => match paused.take() {
                    Some(p) => {
                        let resume: ResumePipeline = body(json!({"pipeline_id": p}));
                        s.send(&resume, id(key)).await;
                    }
                    None => {
                        let pause: PausePipeline = body(json!({"pipeline_id": pipeline, "reason": "chaos"}));
                        if let Outcome::Accepted(_) = s.send(&pause, id(key)).await {
                            paused = Some(pipeline);
                        }
                    }
                },
                13 => {
                    if let Some(run) = last_run.take() {
                        // Refused with `invalid_state` when the run has already ended.
                        let cancel: CancelRun = body(json!({"run_id": run, "reason": "chaos"}));
                        s.send(&cancel, id(key)).await;
                    }
                }
                16 => match schedule_state {
                    None => {
                        let create: CreateSchedule = body(json!({
                            "schedule_id": schedule, "pipeline_id": pipelines[0], "cron": self.cron,
                            "overlap": "skip"}));
                        if let Outcome::Accepted(_) = s.send(&create, id(key)).await {
                            schedule_state = Some(false);
                        }
                    }
                    Some(false) => {
                        let pause: PauseSchedule = body(json!({"schedule_id": schedule}));
                        s.send(&pause, id(key)).await;
                        schedule_state = Some(true);
                    }
                    Some(true) => {
                        let resume: ResumeSchedule = body(json!({"schedule_id": schedule}));
                        s.send(&resume, id(key)).await;
                        schedule_state = Some(false);
                    }
                },
                _ => {
                    s.send(&commit_state(pipeline, &exact_state(self.index, n)), id(key))
                        .await;
                }
            }
            n += 1;
        }
        if let Some(p) = paused {
            let resume: ResumePipeline = body(json!({"pipeline_id": p}));
            self.sender.send(&resume, id("final-resume".into())).await;
        }
        n
    }
}
