//! `flexctl run start <pipeline> [--follow] | list | show | cancel | logs`.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::DeliverPolicy;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use flexcore_client::ClientError;
use flexcore_contracts::commands::{CancelRun, RequestRun};
use flexcore_contracts::lifecycle::RunStatus;
use flexcore_contracts::model::RunTrigger;
use flexcore_contracts::views::RunView;
use flexcore_contracts::work::RunLogLine;
use flexcore_contracts::{subjects, EventEnvelope};
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{json, Value};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::api::Api;
use crate::cli::Output;
use crate::error::Failure;
use crate::nats::Nats;
use crate::pipeline::strip_nulls;
use crate::table::{self, Table};

/// `flexctl run …`.
#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Request a run of a pipeline now; with --follow, watch it to the end.
    Start(StartArgs),
    /// List runs, newest first.
    List(ListArgs),
    /// Show one run: state, attempts, counters, error.
    Show(RunTarget),
    /// Cancel a run (a running attempt stops within about a second).
    Cancel(CancelArgs),
    /// Print a run's plugin log lines (stderr of its plugins).
    Logs(LogsArgs),
}

/// `run start`.
#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// Pipeline id or name.
    pub pipeline: String,
    /// Follow the run's events with a live progress bar until it ends; the exit status
    /// is non-zero unless it succeeded.
    #[arg(long)]
    pub follow: bool,
    /// Give up following after this long (e.g. 10m); the run itself goes on.
    #[arg(long, default_value = "1h", value_parser = crate::duration::parse_duration)]
    pub timeout: Duration,
    /// Makes the request idempotent: the same key (for the same pipeline) always means the
    /// same run, requested once however often the command is repeated (a repeat after
    /// "did not answer in time" reports, and with --follow follows, that run). Without
    /// it a fresh key is drawn, and printed when the request goes unanswered.
    #[arg(long, value_name = "KEY", value_parser = idempotency_key)]
    pub idempotency_key: Option<String>,
}

/// A run by id.
#[derive(Debug, Clone, Args)]
pub struct RunTarget {
    /// Run id, or a unique prefix of it (as `run list` shows it).
    pub run: String,
}

/// `run cancel`.
#[derive(Debug, Clone, Args)]
pub struct CancelArgs {
    /// Run id, or a unique prefix of it.
    pub run: String,
    /// Why (recorded in the event).
    #[arg(long)]
    pub reason: Option<String>,
}

/// `run logs`.
#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// Run id, or a unique prefix of it.
    pub run: String,
    /// Keep printing new lines until the run is over and all its lines are printed (or
    /// Ctrl-C).
    #[arg(long)]
    pub follow: bool,
    /// With --follow: give up (exit non-zero) when the connection to NATS is lost for
    /// this long.
    #[arg(long, default_value = crate::follow::RECONNECT_TIMEOUT, value_parser = crate::duration::parse_duration)]
    pub reconnect_timeout: Duration,
}

/// `run list` filters.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only runs of this pipeline (id or name).
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Only runs in this state.
    #[arg(long, value_parser = table::states(RunStatus::ALL, RunStatus::as_str))]
    pub state: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

/// Runs a `run` subcommand.
pub async fn run(nats: &Nats, command: &RunCommand, output: Output) -> anyhow::Result<()> {
    let api = nats.api().await?;
    match command {
        RunCommand::Start(args) => {
            let pipeline_id = api.pipeline_id(&args.pipeline).await?;
            let key = args
                .idempotency_key
                .clone()
                .unwrap_or_else(|| Uuid::new_v4().to_string());
            let request = StartRequest {
                pipeline: &args.pipeline,
                pipeline_id,
                idempotency_key: &key,
                follow: args.follow,
                timeout: args.timeout,
            };
            let outcome = start_with(&api, &request, output).await?;
            table::emit(output, &outcome, || outcome.text())?;
            match outcome.state.as_str() {
                "succeeded" | "requested" => Ok(()),
                state => Err(Failure {
                    code: "run_not_succeeded",
                    message: format!(
                        "run {} ended {state}{}; `flexctl run logs {}` shows its plugins' output",
                        outcome.run_id,
                        outcome.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default(),
                        outcome.run_id
                    ),
                    details: json!({"run_id": outcome.run_id, "state": state, "run_error": outcome.error}),
                }
                .into()),
            }
        }
        RunCommand::List(args) => {
            let pipeline_id = match &args.pipeline {
                Some(p) => Some(api.pipeline_id(p).await?),
                None => None,
            };
            let filter = json!({"pipeline_id": pipeline_id, "state": args.state, "limit": args.limit.clamp(1, 1000)});
            let runs: Vec<RunView> = api.list_all("run.list", &strip_nulls(filter), args.limit).await?;
            table::emit(output, &runs, || list_text(&runs))
        }
        RunCommand::Show(target) => {
            let run_id = api.run_id(&target.run).await?;
            let run: RunView = api.query("run.get", &json!({"id": run_id})).await?;
            table::emit(output, &run, || show_text(&run))
        }
        RunCommand::Cancel(args) => {
            let run_id = api.run_id(&args.run).await?;
            let cancel = CancelRun {
                run_id,
                reason: args.reason.clone(),
            };
            let accepted = api.send(&cancel).await?;
            let result = json!({"run_id": run_id, "version": accepted.version});
            table::emit(output, &result, || format!("cancel of run {run_id} recorded"))
        }
        RunCommand::Logs(args) => {
            let run_id = api.run_id(&args.run).await?;
            logs(nats, &api, run_id, args, output).await
        }
    }
}

/// How a started run ended (or that it was only requested).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The run.
    pub run_id: Uuid,
    /// Its last known state.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// Records per stream.
    pub counters: Value,
    /// The error, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds from request to end, when followed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Of those, seconds waiting for a runner: from the request to the first claim (to
    /// the end, if no runner ever claimed it), by the events' `recorded_at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued_seconds: Option<f64>,
    /// Seconds from the first claim to the end (retries' back-off included), by the
    /// events' `recorded_at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_seconds: Option<f64>,
}

impl Outcome {
    fn text(&self) -> String {
        if self.state == "requested" {
            return format!(
                "requested run {}\nfollow it: flexctl events tail --aggregate {}  (or: flexctl run show {})",
                self.run_id, self.run_id, self.run_id
            );
        }
        let split = match (self.queued_seconds, self.running_seconds) {
            (Some(queued), Some(running)) => format!(" (queued {queued:.1} s, running {running:.1} s)"),
            (Some(queued), None) => format!(" (queued {queued:.1} s, never claimed)"),
            _ => String::new(),
        };
        format!(
            "run {} {} after {} attempt(s) in {:.1} s{split}; records: {}",
            self.run_id,
            self.state,
            self.attempts,
            self.seconds.unwrap_or_default(),
            records_text(&self.counters)
        )
    }
}

/// When a followed run was requested, first claimed and ended, by its events' `recorded_at`
/// (the command service's clock, so flexctl's own clock and latency do not count).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Timeline {
    requested: Option<DateTime<Utc>>,
    claimed: Option<DateTime<Utc>>,
    ended: Option<DateTime<Utc>>,
}

impl Timeline {
    /// Notes event `name` (`requested`, `claimed`, …) recorded at `at`; `last` marks the
    /// event that ended the run.
    fn see(&mut self, name: &str, at: DateTime<Utc>, last: bool) {
        match name {
            "requested" => {
                self.requested.get_or_insert(at);
            }
            "claimed" => {
                self.claimed.get_or_insert(at);
            }
            _ => {}
        }
        if last {
            self.ended = Some(at);
        }
    }

    /// Seconds from the request to the first claim, or to the end when never claimed.
    fn queued_seconds(&self) -> Option<f64> {
        seconds_between(self.requested?, self.claimed.or(self.ended)?)
    }

    /// Seconds from the first claim to the end.
    fn running_seconds(&self) -> Option<f64> {
        seconds_between(self.claimed?, self.ended?)
    }
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> Option<f64> {
    (to - from).to_std().ok().map(|d| d.as_secs_f64())
}

/// What `run start` asks for.
#[derive(Debug, Clone)]
pub struct StartRequest<'a> {
    /// The pipeline as the operator named it (for the hints printed).
    pub pipeline: &'a str,
    /// The pipeline.
    pub pipeline_id: Uuid,
    /// The key the run id and the command id derive from ([`request_ids`]).
    pub idempotency_key: &'a str,
    /// Follow the run to its end.
    pub follow: bool,
    /// Give up following after this long.
    pub timeout: Duration,
}

/// A `--idempotency-key`: 1 to 200 characters, none of them whitespace or control
/// characters, so that the hint printing it can be pasted back into a shell as it is.
fn idempotency_key(key: &str) -> Result<String, String> {
    if key.is_empty() || key.chars().count() > 200 {
        return Err("an idempotency key has 1 to 200 characters".to_owned());
    }
    if key
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "'\"\\$`;&|<>()*?!#~".contains(c))
    {
        return Err(format!(
            "{key:?}: an idempotency key has no spaces, quotes or shell characters (e.g. nightly-2026-12-06)"
        ));
    }
    Ok(key.to_owned())
}

/// The run id and the command id of `run start --idempotency-key KEY` on a pipeline: the
/// same for the same pipeline and key in every process, so a repeated request is the same
/// command, which the command service applies once and answers again with its first reply.
pub fn request_ids(pipeline_id: Uuid, idempotency_key: &str) -> (Uuid, Uuid) {
    let run_id = Uuid::new_v5(&pipeline_id, format!("flexctl run start:{idempotency_key}").as_bytes());
    (run_id, flexcore_client::command_id(run_id, "request"))
}

fn records_text(counters: &Value) -> String {
    let Some(map) = counters.as_object().filter(|m| !m.is_empty()) else {
        return "0".to_owned();
    };
    map.iter()
        .map(|(stream, n)| format!("{stream}={n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn total(counters: &Value) -> u64 {
    counters
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

/// Requests a run (under a fresh idempotency key); with `follow`, watches it to its end:
/// see [`start_with`].
pub async fn start(
    api: &Api,
    pipeline_id: Uuid,
    follow: bool,
    timeout: Duration,
    output: Output,
) -> anyhow::Result<Outcome> {
    let key = Uuid::new_v4().to_string();
    let pipeline = pipeline_id.to_string();
    let request = StartRequest {
        pipeline: &pipeline,
        pipeline_id,
        idempotency_key: &key,
        follow,
        timeout,
    };
    start_with(api, &request, output).await
}

/// Requests a run with the ids of its idempotency key ([`request_ids`]); with `follow`,
/// watches its events (subscribed before the request, so nothing is missed) until a
/// final one or `timeout`. A request nobody answered may still have been applied: the
/// error then names the run and the key that repeats the request safely.
pub async fn start_with(api: &Api, request: &StartRequest<'_>, output: Output) -> anyhow::Result<Outcome> {
    let (run_id, command_id) = request_ids(request.pipeline_id, request.idempotency_key);
    let timeout = request.timeout;
    let filter = subjects::events_of_aggregate("run", run_id);
    let mut events = if request.follow {
        Some(crate::events::subscribe(api.client(), &filter, DeliverPolicy::All).await?)
    } else {
        None
    };
    let started = std::time::Instant::now();
    let body = RequestRun {
        run_id: Some(run_id),
        pipeline_id: request.pipeline_id,
        trigger: RunTrigger::Manual,
        schedule_id: None,
        scheduled_for: None,
    };
    let span = tracing::info_span!("flexctl.request", request = "run.request");
    flexcore_telemetry::propagation::set_parent_traceparent(&span, None);
    let sent = api.typed().command(&body).id(command_id).send().instrument(span).await;
    match sent {
        Ok(_) => {}
        Err(error @ (ClientError::Unanswered { .. } | ClientError::Stopped { .. })) => {
            let key = request.idempotency_key;
            let failure = Failure {
                code: "unavailable",
                message: format!(
                    "run {run_id} may have been requested all the same: `flexctl run show {run_id}` says whether it exists; \
                     `flexctl run start {} --idempotency-key {key}` repeats the request without starting a second run",
                    request.pipeline
                ),
                details: json!({
                    "reason": crate::error::unanswered_reason(&error),
                    "run_id": run_id,
                    "idempotency_key": key,
                }),
            };
            return Err(anyhow::Error::new(error).context(failure));
        }
        Err(error) => return Err(error.into()),
    }
    let mut outcome = Outcome {
        run_id,
        state: "requested".to_owned(),
        attempts: 0,
        counters: json!({}),
        error: None,
        seconds: None,
        queued_seconds: None,
        running_seconds: None,
    };
    let mut timeline = Timeline::default();
    let Some(events) = events.as_mut() else {
        return Ok(outcome);
    };
    let bar = if output == Output::Text {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(format!("run {run_id} requested"));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, events.next()).await;
        let message = match next {
            Err(_) => {
                bar.finish_and_clear();
                return Err(Failure {
                    code: "follow_timed_out",
                    message: format!(
                        "run {run_id} still {} after {}; it goes on: `flexctl run show {run_id}`",
                        outcome.state,
                        humantime::format_duration(timeout)
                    ),
                    details: json!({"run_id": run_id, "state": outcome.state}),
                }
                .into());
            }
            Ok(None) => anyhow::bail!("the events stream ended while following run {run_id}"),
            Ok(Some(m)) => m.context("reading the events stream")?,
        };
        let event: EventEnvelope = serde_json::from_slice(&message.payload).context("an unreadable event")?;
        let data = event.data.to_value();
        if let Some(attempt) = data.get("attempt").and_then(Value::as_u64) {
            outcome.attempts = outcome.attempts.max(u32::try_from(attempt).unwrap_or(u32::MAX));
        }
        if let Some(counters) = data.get("counters").filter(|c| c.is_object()) {
            outcome.counters = counters.clone();
        }
        let name = event
            .event_type
            .strip_prefix("run.")
            .unwrap_or(&event.event_type)
            .to_owned();
        bar.println(format!(
            "  {}  {}",
            event.recorded_at.format("%H:%M:%S%.3f"),
            event.event_type
        ));
        outcome.state = match name.as_str() {
            "claimed" | "checkpointed" => "running".to_owned(),
            "retried" => "waiting to retry".to_owned(),
            other => other.to_owned(),
        };
        if let Some(error) = data.get("error").filter(|e| e.is_object()) {
            outcome.error = Some(format!(
                "{}: {}",
                error["code"].as_str().unwrap_or("error"),
                error["message"].as_str().unwrap_or("")
            ));
        }
        bar.set_message(format!(
            "{} · attempt {} · {} records",
            outcome.state,
            outcome.attempts.max(1),
            total(&outcome.counters)
        ));
        // A failed or timed-out attempt may still be retried by the scheduler.
        let ended = match name.as_str() {
            "succeeded" | "cancelled" => true,
            "failed" | "timed_out" => data.get("final").and_then(Value::as_bool).unwrap_or(true),
            _ => false,
        };
        timeline.see(&name, event.recorded_at, ended);
        if ended {
            break;
        }
    }
    bar.finish_and_clear();
    outcome.seconds = Some(started.elapsed().as_secs_f64());
    outcome.queued_seconds = timeline.queued_seconds();
    outcome.running_seconds = timeline.running_seconds();
    Ok(outcome)
}

/// Prints a run's log lines from `FLEXCORE_LOGS`; with `--follow`, new ones too, until the
/// run is over and its lines are all printed (or the connection to NATS is lost for longer
/// than `--reconnect-timeout`).
async fn logs(nats: &Nats, api: &Api, run_id: Uuid, args: &LogsArgs, output: Output) -> anyhow::Result<()> {
    // Following takes a while: a connection that reconnects, watched (crate::follow::Watch).
    let following = match args.follow {
        true => Some(Api::new(nats.typed(nats.connect_following().await?))),
        false => None,
    };
    let api = following.as_ref().unwrap_or(api);
    let client = api.client();
    let js = async_nats::jetstream::new(client.clone());
    let subject = subjects::run_logs(run_id);
    let stream = js.get_stream(subjects::LOGS_STREAM).await.with_context(|| {
        format!(
            "the {} stream is not there: has a runner ever run?",
            subjects::LOGS_STREAM
        )
    })?;
    if !args.follow && stream.get_last_raw_message_by_subject(&subject).await.is_err() {
        let message =
            format!("no log lines for run {run_id} (its plugins wrote nothing to stderr, or the lines expired)");
        return match output {
            // JSON Lines: no line at all; the explanation goes where logs go.
            Output::Json => {
                tracing::info!("{message}");
                Ok(())
            }
            Output::Text => crate::write_stdout(&message),
        };
    }
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let watch = crate::follow::Watch::new(client, &nats.url, args.reconnect_timeout);
    let mut follow =
        crate::follow::Follow::new(stream.clone(), subject.clone(), DeliverPolicy::All, consumer, watch).await?;
    // Stream sequence of the last line read (0: none yet).
    let mut read_up_to = 0;
    // Since when the read model has said there is no such run.
    let mut missing_since: Option<std::time::Instant> = None;
    let idle = args.follow.then_some(LOGS_IDLE_CHECK);
    loop {
        let message = match follow.next(idle).await? {
            crate::follow::Next::End | crate::follow::Next::Broken(_) => break,
            crate::follow::Next::Idle => {
                // Bounded: the typed client retries a query while nobody answers, and the
                // watch must get back to the connection soon.
                if !follow.connected() {
                    continue;
                }
                let now = async {
                    match run_now(api, run_id).await {
                        RunNow::Over if !drained(&stream, &subject, read_up_to).await => RunNow::Going,
                        now => now,
                    }
                };
                match tokio::time::timeout(LOGS_IDLE_CHECK * 3, now).await {
                    Ok(RunNow::Over) => break,
                    Ok(RunNow::Missing) => {
                        // A run just requested may not be in the read model yet.
                        if missing_since.get_or_insert_with(std::time::Instant::now).elapsed() > RUN_MISSING_FOR {
                            anyhow::bail!("there is no run {run_id}: `flexctl run list` lists the runs");
                        }
                    }
                    _ => missing_since = None,
                }
                continue;
            }
            crate::follow::Next::Message(message) => message,
        };
        let (sequence, pending) = message.info().map_or((0, 0), |i| (i.stream_sequence, i.pending));
        read_up_to = read_up_to.max(sequence);
        match serde_json::from_slice::<RunLogLine>(&message.payload) {
            Ok(line) => match output {
                Output::Json => crate::write_stdout(&serde_json::to_string(&line)?)?,
                Output::Text => crate::write_stdout(&format!(
                    "{} attempt {} step {} {}: {}",
                    line.at.format("%H:%M:%S%.3f"),
                    line.attempt,
                    line.step,
                    line.plugin,
                    line.line
                ))?,
            },
            Err(error) => tracing::warn!(%error, "skipping an unreadable log line"),
        }
        if pending == 0 && !args.follow {
            break;
        }
    }
    Ok(())
}

/// How long `run logs --follow` waits without a new line before it asks whether the run
/// is over.
const LOGS_IDLE_CHECK: Duration = Duration::from_secs(1);

/// Whether the run is in a final state (a failure still to be retried is not).
fn is_over(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "cancelled" | "timed_out")
}

/// How long `run logs --follow` waits for a run the read model does not know.
const RUN_MISSING_FOR: Duration = Duration::from_secs(10);

/// Where a followed run is, as the read model says.
enum RunNow {
    /// In a final state.
    Over,
    /// Not over yet.
    Going,
    /// There is no such run.
    Missing,
    /// No answer.
    Unknown,
}

async fn run_now(api: &Api, run_id: Uuid) -> RunNow {
    match api.query::<RunView>("run.get", &json!({"id": run_id})).await {
        Ok(run) if is_over(&run.state) => RunNow::Over,
        Ok(_) => RunNow::Going,
        Err(error) if error.refusal().is_some_and(|r| r.code.as_str() == "not_found") => RunNow::Missing,
        Err(error) => {
            tracing::debug!(%error, "asking whether the run is over");
            RunNow::Unknown
        }
    }
}

/// Whether every line of the run stored so far has been read (up to `read_up_to`).
async fn drained(stream: &async_nats::jetstream::stream::Stream, subject: &str, read_up_to: u64) -> bool {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(last) => last.sequence <= read_up_to,
        // No line at all (or none left): nothing to wait for.
        Err(error) => matches!(
            error.kind(),
            async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound
        ),
    }
}

fn list_text(runs: &[RunView]) -> String {
    let mut t = Table::new(&[
        "RUN",
        "PIPELINE",
        "STATE",
        "TRIGGER",
        "ATTEMPT",
        "RECORDS",
        "REQUESTED",
        "DURATION",
    ]);
    let ids = table::short_ids(&runs.iter().map(|r| r.run_id).collect::<Vec<_>>());
    for (r, id) in runs.iter().zip(ids) {
        t.row(vec![
            id,
            r.pipeline_name.clone(),
            r.state.clone(),
            format!("{:?}", r.trigger).to_lowercase(),
            r.attempt.to_string(),
            r.records_total.to_string(),
            table::time(Some(r.requested_at)),
            r.duration_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
        ]);
    }
    t.render("no runs (start one: flexctl run start <pipeline> --follow)")
}

fn show_text(r: &RunView) -> String {
    let mut text = table::fields(&[
        ("run", r.run_id.to_string()),
        ("pipeline", format!("{} ({})", r.pipeline_name, r.pipeline_id)),
        ("state", r.state.clone()),
        ("trigger", format!("{:?}", r.trigger).to_lowercase()),
        ("scheduled for", table::time(r.scheduled_for)),
        ("attempt", r.attempt.to_string()),
        (
            "records",
            format!("{} ({})", r.records_total, records_text(&json!(r.counters))),
        ),
        ("requested", table::time(Some(r.requested_at))),
        ("started", table::time(r.started_at)),
        ("finished", table::time(r.finished_at)),
        (
            "error",
            r.error
                .as_ref()
                .map_or_else(|| "-".to_owned(), |e| format!("{}: {}", e.code, e.message)),
        ),
        ("last state", serde_json::to_string(&r.last_state).unwrap_or_default()),
    ]);
    text.push_str("\nATTEMPTS\n");
    let mut t = Table::new(&["#", "RUNNER", "CLAIMED", "ENDED", "OUTCOME", "ERROR"]);
    for a in &r.attempts {
        t.row(vec![
            a.attempt.to_string(),
            a.runner_id.clone().unwrap_or_else(|| "-".into()),
            table::time(a.claimed_at),
            table::time(a.ended_at),
            a.outcome.clone().unwrap_or_else(|| "-".into()),
            a.error
                .as_ref()
                .map_or_else(|| "-".into(), |e| format!("{}: {}", e.code, e.message)),
        ]);
    }
    text.push_str(&t.render("no attempts yet"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: u32, millis: u32) -> DateTime<Utc> {
        use chrono::TimeZone as _;
        Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, second).unwrap() + chrono::Duration::milliseconds(millis.into())
    }

    #[test]
    fn a_run_splits_into_time_queued_and_time_running() {
        let mut t = Timeline::default();
        t.see("requested", at(0, 0), false);
        t.see("claimed", at(1, 500), false);
        t.see("checkpointed", at(2, 0), false);
        // A failed attempt that is retried does not end the run; the second claim does
        // not restart the clock.
        t.see("failed", at(3, 0), false);
        t.see("retried", at(3, 100), false);
        t.see("claimed", at(5, 0), false);
        t.see("succeeded", at(6, 250), true);
        assert_eq!(t.queued_seconds(), Some(1.5));
        assert_eq!(t.running_seconds(), Some(4.75));
    }

    #[test]
    fn a_run_never_claimed_was_queued_until_it_ended() {
        let mut t = Timeline::default();
        t.see("requested", at(0, 0), false);
        assert_eq!((t.queued_seconds(), t.running_seconds()), (None, None));
        t.see("cancelled", at(2, 0), true);
        assert_eq!((t.queued_seconds(), t.running_seconds()), (Some(2.0), None));
        let outcome = Outcome {
            run_id: Uuid::nil(),
            state: "cancelled".into(),
            attempts: 0,
            counters: json!({}),
            error: None,
            seconds: Some(2.1),
            queued_seconds: t.queued_seconds(),
            running_seconds: t.running_seconds(),
        };
        assert!(
            outcome.text().contains("in 2.1 s (queued 2.0 s, never claimed)"),
            "{}",
            outcome.text()
        );
        let json = serde_json::to_value(&outcome).unwrap();
        assert_eq!(json["queued_seconds"], json!(2.0));
        assert!(json.get("running_seconds").is_none(), "{json}");
    }

    #[test]
    fn an_idempotency_key_always_means_the_same_run_and_command() {
        let (pipeline, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(request_ids(pipeline, "nightly-1"), request_ids(pipeline, "nightly-1"));
        let (run, command) = request_ids(pipeline, "nightly-1");
        assert_ne!(run, command);
        assert_ne!(request_ids(pipeline, "nightly-2").0, run);
        assert_ne!(request_ids(other, "nightly-1").0, run, "a key is per pipeline");
    }

    #[test]
    fn start_takes_an_idempotency_key() {
        use clap::Parser as _;
        let cli =
            crate::cli::Cli::try_parse_from(["flexctl", "run", "start", "demo", "--idempotency-key", "k1"]).unwrap();
        let crate::cli::Command::Run(RunCommand::Start(args)) = cli.command else {
            panic!("not run start")
        };
        assert_eq!(args.idempotency_key.as_deref(), Some("k1"));
        for bad in ["", "two words", "a;b", "$(x)", &"k".repeat(201)] {
            let error = crate::cli::Cli::try_parse_from(["flexctl", "run", "start", "demo", "--idempotency-key", bad])
                .unwrap_err()
                .to_string();
            assert!(error.contains("idempotency key"), "{bad:?}: {error}");
        }
        assert_eq!(idempotency_key("nightly-2026-12-06:1").unwrap(), "nightly-2026-12-06:1");
    }
}
