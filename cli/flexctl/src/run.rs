//! `flexctl run start <pipeline> [--follow] | list | show | cancel | logs`.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::DeliverPolicy;
use clap::{Args, Subcommand};
use flexcore_contracts::commands::{CancelRun, RequestRun};
use flexcore_contracts::model::RunTrigger;
use flexcore_contracts::views::RunView;
use flexcore_contracts::work::RunLogLine;
use flexcore_contracts::{subjects, EventEnvelope};
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::api::Api;
use crate::cli::Output;
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
}

/// A run by id.
#[derive(Debug, Clone, Args)]
pub struct RunTarget {
    /// Run id.
    pub run: Uuid,
}

/// `run cancel`.
#[derive(Debug, Clone, Args)]
pub struct CancelArgs {
    /// Run id.
    pub run: Uuid,
    /// Why (recorded in the event).
    #[arg(long)]
    pub reason: Option<String>,
}

/// `run logs`.
#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// Run id.
    pub run: Uuid,
    /// Keep following new lines until Ctrl-C.
    #[arg(long)]
    pub follow: bool,
}

/// `run list` filters.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only runs of this pipeline (id or name).
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Only this state (requested, running, succeeded, failed, cancelled, timed_out, …).
    #[arg(long)]
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
            let outcome = start(&api, pipeline_id, args.follow, args.timeout, output).await?;
            table::emit(output, &outcome, || outcome.text())?;
            match outcome.state.as_str() {
                "succeeded" | "requested" => Ok(()),
                state => Err(anyhow::anyhow!(
                    "run {} ended {state}{}; `flexctl run logs {}` shows its plugins' output",
                    outcome.run_id,
                    outcome.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default(),
                    outcome.run_id
                )),
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
            let run: RunView = api.query("run.get", &json!({"id": target.run})).await?;
            table::emit(output, &run, || show_text(&run))
        }
        RunCommand::Cancel(args) => {
            let cancel = CancelRun {
                run_id: args.run,
                reason: args.reason.clone(),
            };
            let accepted = api.send(&cancel).await?;
            let result = json!({"run_id": args.run, "version": accepted.version});
            table::emit(output, &result, || format!("cancel of run {} recorded", args.run))
        }
        RunCommand::Logs(args) => logs(api.client(), args, output).await,
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
}

impl Outcome {
    fn text(&self) -> String {
        if self.state == "requested" {
            return format!(
                "requested run {}\nfollow it: flexctl events tail --aggregate {}  (or: flexctl run show {})",
                self.run_id, self.run_id, self.run_id
            );
        }
        format!(
            "run {} {} after {} attempt(s) in {:.1} s; records: {}",
            self.run_id,
            self.state,
            self.attempts,
            self.seconds.unwrap_or_default(),
            records_text(&self.counters)
        )
    }
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

/// Requests a run; with `follow`, watches its events (subscribed before the request, so
/// nothing is missed) until a final one or `timeout`.
pub async fn start(
    api: &Api,
    pipeline_id: Uuid,
    follow: bool,
    timeout: Duration,
    output: Output,
) -> anyhow::Result<Outcome> {
    let run_id = Uuid::now_v7();
    let filter = subjects::events_of_aggregate("run", run_id);
    let mut events = if follow {
        Some(crate::events::subscribe(api.client(), &filter, DeliverPolicy::All).await?)
    } else {
        None
    };
    let started = std::time::Instant::now();
    api.send(&RequestRun {
        run_id: Some(run_id),
        pipeline_id,
        trigger: RunTrigger::Manual,
        schedule_id: None,
        scheduled_for: None,
    })
    .await?;
    let mut outcome = Outcome {
        run_id,
        state: "requested".to_owned(),
        attempts: 0,
        counters: json!({}),
        error: None,
        seconds: None,
    };
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
                anyhow::bail!(
                    "run {run_id} still {} after {timeout:?}; it goes on: `flexctl run show {run_id}`",
                    outcome.state
                );
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
        if matches!(name.as_str(), "succeeded" | "failed" | "cancelled" | "timed_out") {
            // A failed or timed-out attempt may still be retried by the scheduler.
            let last = data.get("final").and_then(Value::as_bool).unwrap_or(true);
            if name == "succeeded" || name == "cancelled" || last {
                break;
            }
        }
    }
    bar.finish_and_clear();
    outcome.seconds = Some(started.elapsed().as_secs_f64());
    Ok(outcome)
}

/// Prints a run's log lines from `FLEXCORE_LOGS`.
async fn logs(client: &async_nats::Client, args: &LogsArgs, output: Output) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(client.clone());
    let subject = subjects::run_logs(args.run);
    let stream = js.get_stream(subjects::LOGS_STREAM).await.with_context(|| {
        format!(
            "the {} stream is not there: has a runner ever run?",
            subjects::LOGS_STREAM
        )
    })?;
    if !args.follow && stream.get_last_raw_message_by_subject(&subject).await.is_err() {
        return crate::write_stdout(&format!(
            "no log lines for run {} (its plugins wrote nothing to stderr, or the lines expired)",
            args.run
        ));
    }
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: subject,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let pending = message.info().map(|i| i.pending).unwrap_or(0);
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
    for r in runs {
        t.row(vec![
            r.run_id.to_string(),
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
