//! `flexctl schedule backfill <id> --from … --to …`: requests the runs of a schedule's past
//! slots. Each run's id derives from (schedule, slot) exactly like the scheduler's, so a
//! backfill repeated, interrupted and resumed, or overlapping slots the scheduler already
//! fired, requests every slot's run at most once.
//!
//! The backfill has its own overlap policy (the schedule's is not used):
//! - `allow`: as many slots at once as the pipeline's `max_active_runs` allows; the others
//!   wait for a run to end.
//! - `buffer-one`: one slot at a time; each waits until the previous run has ended.
//! - `skip`: a slot that finds the pipeline at `max_active_runs` is recorded as skipped
//!   (`schedule.slot_skipped`, reason `backfill_overlap`) and not run.

use std::time::Duration;

use anyhow::{bail, Context as _};
use async_nats::Client;
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use flexcore_contracts::ids::scheduled_run_id;
use flexcore_contracts::queries::QueryReply;
use flexcore_contracts::views::{RunView, ScheduleView};
use flexcore_contracts::{subjects, CommandReply, ErrorBody, ErrorCode};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::cli::Output;

/// Most slots one backfill requests.
pub const MAX_SLOTS: usize = 10_000;
/// How often a waiting backfill looks at the pipeline's runs again.
const POLL: Duration = Duration::from_millis(500);

/// Options of `flexctl schedule backfill`.
#[derive(Debug, Clone, Args)]
pub struct BackfillArgs {
    /// The schedule.
    pub schedule_id: Uuid,
    /// First instant (inclusive, RFC 3339, e.g. 2026-11-01T00:00:00Z).
    #[arg(long)]
    pub from: DateTime<Utc>,
    /// Last instant (inclusive, not in the future).
    #[arg(long)]
    pub to: DateTime<Utc>,
    /// What a slot does when the pipeline is busy.
    #[arg(long, value_enum, default_value_t = BackfillOverlap::Allow)]
    pub overlap: BackfillOverlap,
}

/// The backfill's overlap policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillOverlap {
    /// Record the slot as skipped.
    Skip,
    /// One at a time: wait for the previous run to end.
    BufferOne,
    /// Up to max_active_runs at once; the rest wait.
    Allow,
}

/// What happened to one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotResult {
    /// Its run was requested now.
    Requested,
    /// Its run already existed (fired by the scheduler or an earlier backfill).
    Existed,
    /// Skipped under `--overlap skip`.
    Skipped,
}

/// One slot's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct SlotLine {
    /// The slot.
    pub slot: DateTime<Utc>,
    /// Its run's id.
    pub run_id: Uuid,
    /// What happened.
    pub result: SlotResult,
}

/// Runs the backfill and prints one line per slot.
pub async fn backfill(nats_url: &str, args: &BackfillArgs, output: Output) -> anyhow::Result<()> {
    let client = crate::connect_one(nats_url).await?;
    let lines = run_backfill(&client, args).await?;
    match output {
        Output::Json => crate::write_stdout(&serde_json::to_string(&lines)?),
        Output::Text => {
            for l in &lines {
                crate::write_stdout(&format!("{}  {}  {:?}", l.slot.to_rfc3339(), l.run_id, l.result))?;
            }
            let count = |r: SlotResult| lines.iter().filter(|l| l.result == r).count();
            crate::write_stdout(&format!(
                "{} slot(s): {} requested, {} already existed, {} skipped",
                lines.len(),
                count(SlotResult::Requested),
                count(SlotResult::Existed),
                count(SlotResult::Skipped)
            ))
        }
    }
}

/// The backfill itself (separate from printing, for tests).
pub async fn run_backfill(client: &Client, args: &BackfillArgs) -> anyhow::Result<Vec<SlotLine>> {
    if args.to < args.from {
        bail!("--to ({}) is before --from ({})", args.to, args.from);
    }
    if args.to > Utc::now() {
        bail!(
            "--to ({}) is in the future: backfill requests past slots only; the scheduler fires the rest",
            args.to
        );
    }
    let schedule: ScheduleView = query(client, "schedule.get", json!({"id": args.schedule_id}))
        .await
        .with_context(|| format!("reading schedule {}", args.schedule_id))?;
    if schedule.state == "deleted" {
        bail!("schedule {} is deleted: it requests no more runs", args.schedule_id);
    }
    let mut spec = schedule.spec.clone();
    spec.start_at = Some(args.from);
    spec.end_at = Some(args.to);
    let calendar = flexcore_cron::Calendar::new(&spec).context("the schedule's cron or time zone")?;
    let slots = calendar.slots_between(args.from - chrono::Duration::seconds(1), args.to, MAX_SLOTS + 1);
    if slots.len() > MAX_SLOTS {
        bail!(
            "{} to {} holds more than {MAX_SLOTS} slots of {:?}: backfill a shorter range at a time",
            args.from,
            args.to,
            spec.cron
        );
    }
    let mut lines = Vec::with_capacity(slots.len());
    let mut previous: Option<Uuid> = None;
    for slot in slots {
        let run_id = scheduled_run_id(args.schedule_id, slot);
        if args.overlap == BackfillOverlap::BufferOne {
            if let Some(run) = previous {
                wait_finished(client, run).await?;
            }
        }
        let body = json!({"run_id": run_id, "pipeline_id": schedule.pipeline_id, "trigger": "backfill",
                          "schedule_id": args.schedule_id, "scheduled_for": slot});
        let result = loop {
            match command(client, "run.request", &body).await? {
                Ok(()) => break SlotResult::Requested,
                Err(e) if reason(&e) == Some("exists") => break SlotResult::Existed,
                Err(e) if reason(&e) == Some("max_active_runs") => match args.overlap {
                    BackfillOverlap::Skip => {
                        let skip = json!({"schedule_id": args.schedule_id, "slot": slot, "reason": "backfill_overlap"});
                        match command(client, "schedule.skip_slot", &skip).await? {
                            Ok(()) => break SlotResult::Skipped,
                            Err(e) => bail!("slot {slot}: recording the skip: {}: {}", e.code, e.message),
                        }
                    }
                    BackfillOverlap::BufferOne | BackfillOverlap::Allow => tokio::time::sleep(POLL).await,
                },
                Err(e) => bail!("slot {slot}: {}: {}", e.code, e.message),
            }
        };
        tracing::info!(%slot, %run_id, ?result, "backfill slot");
        previous = Some(run_id);
        lines.push(SlotLine { slot, run_id, result });
    }
    Ok(lines)
}

fn reason(e: &ErrorBody) -> Option<&str> {
    (e.code == ErrorCode::Conflict)
        .then(|| e.details.as_ref()?.get("reason")?.as_str())
        .flatten()
}

/// Waits until the run has ended (any final state).
async fn wait_finished(client: &Client, run_id: Uuid) -> anyhow::Result<()> {
    loop {
        match query::<RunView>(client, "run.get", json!({"id": run_id})).await {
            Ok(run) if matches!(run.state.as_str(), "succeeded" | "failed" | "cancelled" | "timed_out") => {
                return Ok(())
            }
            Ok(_) => {}
            // Not projected yet.
            Err(e) if e.to_string().contains("not_found") => {}
            Err(e) => return Err(e),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Sends a command; `Ok(Err(…))` is a refusal, `Err` a transport failure.
async fn command(client: &Client, name: &str, body: &Value) -> anyhow::Result<Result<(), ErrorBody>> {
    let (aggregate, action) = name.split_once('.').unwrap_or((name, ""));
    let reply = client
        .request(subjects::command(aggregate, action), serde_json::to_vec(body)?.into())
        .await
        .with_context(|| format!("{name}: no reply (is flexcore-command running?)"))?;
    match serde_json::from_slice::<CommandReply>(&reply.payload).with_context(|| format!("{name}: unreadable reply"))? {
        CommandReply::Accepted(_) => Ok(Ok(())),
        CommandReply::Rejected(r) => Ok(Err(r.error)),
    }
}

/// Sends a query and decodes its `data`.
pub async fn query<T: serde::de::DeserializeOwned>(client: &Client, name: &str, body: Value) -> anyhow::Result<T> {
    let (view, operation) = name.split_once('.').unwrap_or((name, ""));
    let reply = client
        .request(subjects::query(view, operation), serde_json::to_vec(&body)?.into())
        .await
        .with_context(|| format!("{name}: no reply (is flexcore-projection running?)"))?;
    match serde_json::from_slice::<QueryReply>(&reply.payload).with_context(|| format!("{name}: unreadable reply"))? {
        QueryReply::Ok(ok) => serde_json::from_value(ok.data).with_context(|| format!("{name}: unexpected data")),
        QueryReply::Err(e) => bail!("{}: {}", e.error.code, e.error.message),
    }
}
