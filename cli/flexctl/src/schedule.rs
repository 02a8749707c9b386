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
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use flexcore_contracts::commands::{
    CreateSchedule, DeleteSchedule, PauseSchedule, RequestRun, ResumeSchedule, SkipSlot, UpdateSchedule,
};
use flexcore_contracts::ids::scheduled_run_id;
use flexcore_contracts::lifecycle::ScheduleStatus;
use flexcore_contracts::model::{OverlapPolicy, RunTrigger};
use flexcore_contracts::views::{RunView, ScheduleView};
use flexcore_contracts::ErrorCode;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::api::Api;
use crate::cli::Output;
use crate::nats::Nats;

/// Most slots one backfill requests.
pub const MAX_SLOTS: usize = 10_000;
/// How often a waiting backfill looks at the pipeline's runs again.
const POLL: Duration = Duration::from_millis(500);

/// Options of `flexctl schedule backfill`.
#[derive(Debug, Clone, Args)]
pub struct BackfillArgs {
    /// The schedule: its id or a unique prefix of it.
    pub schedule_id: String,
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
pub async fn backfill(nats: &Nats, args: &BackfillArgs, output: Output) -> anyhow::Result<()> {
    let lines = run_backfill(&nats.api().await?, args).await?;
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
pub async fn run_backfill(api: &Api, args: &BackfillArgs) -> anyhow::Result<Vec<SlotLine>> {
    let schedule_id = api.schedule_id(&args.schedule_id).await?;
    if args.to < args.from {
        bail!("--to ({}) is before --from ({})", args.to, args.from);
    }
    if args.to > Utc::now() {
        bail!(
            "--to ({}) is in the future: backfill requests past slots only; the scheduler fires the rest",
            args.to
        );
    }
    let schedule: ScheduleView = api
        .query("schedule.get", &json!({"id": schedule_id}))
        .await
        .with_context(|| format!("reading schedule {schedule_id}"))?;
    if schedule.state == ScheduleStatus::Deleted.as_str() {
        bail!("schedule {schedule_id} is deleted: it requests no more runs");
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
        let run_id = scheduled_run_id(schedule_id, slot);
        if args.overlap == BackfillOverlap::BufferOne {
            if let Some(run) = previous {
                wait_finished(api, run).await?;
            }
        }
        let request = RequestRun {
            run_id: Some(run_id),
            pipeline_id: schedule.pipeline_id,
            trigger: RunTrigger::Backfill,
            schedule_id: Some(schedule_id),
            scheduled_for: Some(slot),
        };
        let result = loop {
            match api.send(&request).await {
                Ok(_) => break SlotResult::Requested,
                Err(e) if e.reason() == Some(flexcore_contracts::ErrorReason::Exists) => break SlotResult::Existed,
                Err(e) if e.reason() == Some(flexcore_contracts::ErrorReason::MaxActiveRuns) => match args.overlap {
                    BackfillOverlap::Skip => {
                        let skip = SkipSlot {
                            schedule_id,
                            slot,
                            reason: "backfill_overlap".parse()?,
                        };
                        match api.send(&skip).await {
                            Ok(_) => break SlotResult::Skipped,
                            Err(e) => {
                                return Err(anyhow::Error::new(e).context(format!("slot {slot}: recording the skip")))
                            }
                        }
                    }
                    BackfillOverlap::BufferOne | BackfillOverlap::Allow => tokio::time::sleep(POLL).await,
                },
                Err(e) => return Err(anyhow::Error::new(e).context(format!("slot {slot}"))),
            }
        };
        tracing::info!(%slot, %run_id, ?result, "backfill slot");
        previous = Some(run_id);
        lines.push(SlotLine { slot, run_id, result });
    }
    Ok(lines)
}

/// Waits until the run has ended (any final state).
async fn wait_finished(api: &Api, run_id: Uuid) -> anyhow::Result<()> {
    loop {
        match api.query::<RunView>("run.get", &json!({"id": run_id})).await {
            Ok(run) if matches!(run.state.as_str(), "succeeded" | "failed" | "cancelled" | "timed_out") => {
                return Ok(())
            }
            Ok(_) => {}
            // Not projected yet.
            Err(e) if e.is(ErrorCode::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `flexctl schedule …`.
#[derive(Debug, clap::Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule on a pipeline.
    Create(CreateArgs),
    /// List schedules.
    List(ListArgs),
    /// Show one schedule: its spec, state, next fire, skipped and missed slots.
    Show(ScheduleTarget),
    /// Change a schedule's timing or policies (only the options given change); its
    /// state (paused or not) stays as it is.
    Update(UpdateArgs),
    /// Pause a schedule: its slots are not fired (nor caught up) while paused.
    Pause(ScheduleTarget),
    /// Resume a paused schedule.
    Resume(ScheduleTarget),
    /// Delete a schedule for good.
    Delete(ScheduleTarget),
    /// Request the runs of a schedule's past slots between --from and --to (idempotent:
    /// slots whose run exists are left alone), with the backfill's own overlap policy.
    Backfill(BackfillArgs),
}

/// A schedule by id.
#[derive(Debug, Clone, Args)]
pub struct ScheduleTarget {
    /// Schedule id, or a unique prefix of it (as `schedule list` shows it).
    pub schedule_id: String,
}

/// `schedule update`: the options given replace the schedule's; the others stay.
#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    /// Schedule id, or a unique prefix of it.
    pub schedule_id: String,
    /// New cron expression: 5 fields (minute hour day month weekday) or 6 (seconds first).
    #[arg(long)]
    pub cron: Option<String>,
    /// New IANA time zone, e.g. Europe/Berlin.
    #[arg(long)]
    pub timezone: Option<String>,
    /// New overlap policy.
    #[arg(long, value_enum)]
    pub overlap: Option<Overlap>,
    /// New catch-up window (seconds).
    #[arg(long)]
    pub catchup_window: Option<u64>,
    /// New catch-up cap.
    #[arg(long)]
    pub catchup_cap: Option<u32>,
    /// New jitter (seconds).
    #[arg(long)]
    pub jitter: Option<u64>,
    /// New start bound (RFC 3339).
    #[arg(long)]
    pub start_at: Option<DateTime<Utc>>,
    /// New end bound (RFC 3339).
    #[arg(long)]
    pub end_at: Option<DateTime<Utc>>,
}

impl UpdateArgs {
    /// The `schedule.update` command for `schedule_id`; refused when nothing would change.
    pub fn command(&self, schedule_id: Uuid) -> anyhow::Result<UpdateSchedule> {
        let update = UpdateSchedule {
            schedule_id,
            cron: self.cron.clone(),
            timezone: self.timezone.clone(),
            overlap: self.overlap.map(Overlap::policy),
            catchup_window_seconds: self.catchup_window,
            catchup_cap: self.catchup_cap,
            jitter_seconds: self.jitter,
            start_at: self.start_at,
            end_at: self.end_at,
        };
        let unchanged = UpdateSchedule {
            schedule_id,
            cron: None,
            timezone: None,
            overlap: None,
            catchup_window_seconds: None,
            catchup_cap: None,
            jitter_seconds: None,
            start_at: None,
            end_at: None,
        };
        if update == unchanged {
            bail!(
                "nothing to update: give at least one of --cron, --timezone, --overlap, --catchup-window, \
                 --catchup-cap, --jitter, --start-at, --end-at"
            );
        }
        Ok(update)
    }
}

/// `schedule list` filters.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only schedules of this pipeline (id or name).
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Only schedules in this state.
    #[arg(long, value_parser = crate::table::states(ScheduleStatus::ALL, ScheduleStatus::as_str))]
    pub state: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// `schedule create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Pipeline id or name.
    #[arg(long)]
    pub pipeline: String,
    /// Cron expression: 5 fields (minute hour day month weekday) or 6 (with seconds first).
    #[arg(long)]
    pub cron: String,
    /// IANA time zone the cron is read in, e.g. Europe/Berlin.
    #[arg(long, default_value = "UTC")]
    pub timezone: String,
    /// What a slot does while a run is still active.
    #[arg(long, value_enum, default_value_t = Overlap::Skip)]
    pub overlap: Overlap,
    /// After downtime, slots this far back (seconds) are caught up; older ones are recorded missed.
    #[arg(long, default_value_t = 3600)]
    pub catchup_window: u64,
    /// At most this many slots are caught up; the rest are recorded missed.
    #[arg(long, default_value_t = 1)]
    pub catchup_cap: u32,
    /// Delay each fire by up to this many seconds (the same delay for the same slot).
    #[arg(long, default_value_t = 0)]
    pub jitter: u64,
    /// No slot before this instant (RFC 3339).
    #[arg(long)]
    pub start_at: Option<DateTime<Utc>>,
    /// No slot after this instant (RFC 3339).
    #[arg(long)]
    pub end_at: Option<DateTime<Utc>>,
    /// Create it paused.
    #[arg(long)]
    pub paused: bool,
}

/// Overlap policy on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Overlap {
    /// Record the slot as skipped.
    Skip,
    /// Keep one pending slot; start it when the active run ends.
    BufferOne,
    /// Start anyway, up to the pipeline's max active runs.
    Allow,
}

impl Overlap {
    /// The contract's policy.
    pub fn policy(self) -> OverlapPolicy {
        match self {
            Overlap::Skip => OverlapPolicy::Skip,
            Overlap::BufferOne => OverlapPolicy::BufferOne,
            Overlap::Allow => OverlapPolicy::Allow,
        }
    }
}

/// Runs a `schedule` subcommand.
pub async fn run(nats: &Nats, command: &ScheduleCommand, output: Output) -> anyhow::Result<()> {
    if let ScheduleCommand::Backfill(args) = command {
        return backfill(nats, args, output).await;
    }
    let api = nats.api().await?;
    match command {
        ScheduleCommand::Create(a) => {
            let pipeline_id = api.pipeline_id(&a.pipeline).await?;
            let create = CreateSchedule {
                schedule_id: None,
                pipeline_id,
                cron: a.cron.clone(),
                timezone: a.timezone.clone(),
                overlap: a.overlap.policy(),
                catchup_window_seconds: a.catchup_window,
                catchup_cap: a.catchup_cap,
                jitter_seconds: a.jitter,
                start_at: a.start_at,
                end_at: a.end_at,
                paused: a.paused,
            };
            let accepted = api.send(&create).await?;
            let id = accepted.aggregate_id;
            let result = json!({"schedule_id": id, "pipeline_id": pipeline_id});
            crate::table::emit(output, &result, || {
                format!("created schedule {id} ({} in {})", a.cron, a.timezone)
            })
        }
        ScheduleCommand::List(a) => {
            let pipeline_id = match &a.pipeline {
                Some(p) => Some(api.pipeline_id(p).await?),
                None => None,
            };
            let filter = json!({"pipeline_id": pipeline_id, "state": a.state, "limit": a.limit.clamp(1, 1000)});
            let items: Vec<ScheduleView> = api
                .list_all("schedule.list", &crate::pipeline::strip_nulls(filter), a.limit)
                .await?;
            crate::table::emit(output, &items, || table(&items))
        }
        ScheduleCommand::Show(t) => {
            let id = api.schedule_id(&t.schedule_id).await?;
            let schedule: ScheduleView = api.query("schedule.get", &json!({"id": id})).await?;
            crate::table::emit(output, &schedule, || show_text(&schedule))
        }
        ScheduleCommand::Update(a) => {
            let id = api.schedule_id(&a.schedule_id).await?;
            let accepted = api.send(&a.command(id)?).await?;
            let result = json!({"schedule_id": id, "version": accepted.version});
            crate::table::emit(output, &result, || {
                format!("updated schedule {id} (version {})", accepted.version)
            })
        }
        ScheduleCommand::Pause(t) => simple(&api, "pause", &t.schedule_id, output).await,
        ScheduleCommand::Resume(t) => simple(&api, "resume", &t.schedule_id, output).await,
        ScheduleCommand::Delete(t) => simple(&api, "delete", &t.schedule_id, output).await,
        ScheduleCommand::Backfill(_) => Ok(()),
    }
}

async fn simple(api: &Api, action: &str, reference: &str, output: Output) -> anyhow::Result<()> {
    let id = api.schedule_id(reference).await?;
    let accepted = match action {
        "pause" => {
            api.send(&PauseSchedule {
                schedule_id: id,
                reason: None,
            })
            .await?
        }
        "resume" => api.send(&ResumeSchedule { schedule_id: id }).await?,
        _ => api.send(&DeleteSchedule { schedule_id: id }).await?,
    };
    let result = json!({"schedule_id": id, "action": action, "version": accepted.version});
    crate::table::emit(output, &result, || format!("schedule {id}: {action} done"))
}

/// Schedules as a table.
pub fn table(items: &[ScheduleView]) -> String {
    let mut t = crate::table::Table::new(&[
        "SCHEDULE",
        "STATE",
        "CRON",
        "ZONE",
        "OVERLAP",
        "NEXT FIRE",
        "SKIPPED",
        "MISSED",
        "PIPELINE",
    ]);
    let ids = crate::table::short_ids(&items.iter().map(|s| s.schedule_id).collect::<Vec<_>>());
    for (s, id) in items.iter().zip(ids) {
        t.row(vec![
            id,
            s.state.clone(),
            s.spec.cron.clone(),
            s.spec.timezone.clone(),
            serde_json::to_value(s.spec.overlap)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            crate::table::time(s.next_fire),
            s.slots_skipped.to_string(),
            s.slots_missed.to_string(),
            pipeline_label(s),
        ]);
    }
    t.render("no schedules")
}

/// A schedule's pipeline in a table: its name and short id (the id alone while the
/// pipeline's name is not known).
fn pipeline_label(s: &ScheduleView) -> String {
    match &s.pipeline_name {
        Some(name) => format!("{name} ({})", crate::table::short(s.pipeline_id)),
        None => crate::table::short(s.pipeline_id),
    }
}

fn lower<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// One schedule as key/value lines.
pub fn show_text(s: &ScheduleView) -> String {
    let spec = &s.spec;
    let bound = |t: Option<DateTime<Utc>>| t.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339());
    crate::table::fields(&[
        ("schedule", s.schedule_id.to_string()),
        (
            "pipeline",
            format!("{} ({})", s.pipeline_name.as_deref().unwrap_or("?"), s.pipeline_id),
        ),
        ("state", s.state.clone()),
        ("cron", format!("{} in {}", spec.cron, spec.timezone)),
        ("overlap", lower(&spec.overlap)),
        (
            "catch-up",
            format!(
                "{} s back, at most {} slot(s)",
                spec.catchup_window_seconds, spec.catchup_cap
            ),
        ),
        ("jitter", format!("{} s", spec.jitter_seconds)),
        ("start at", bound(spec.start_at)),
        ("end at", bound(spec.end_at)),
        ("next fire", crate::table::time(s.next_fire)),
        (
            "skipped",
            format!(
                "{}{}",
                s.slots_skipped,
                s.last_skipped
                    .as_ref()
                    .map(|l| format!(" (last {} at {})", l.reason, l.slot.to_rfc3339()))
                    .unwrap_or_default()
            ),
        ),
        (
            "missed",
            format!(
                "{}{}",
                s.slots_missed,
                s.last_missed
                    .map(|t| format!(" (last {})", t.to_rfc3339()))
                    .unwrap_or_default()
            ),
        ),
        ("created", crate::table::time(Some(s.created_at))),
        ("updated", crate::table::time(Some(s.updated_at))),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn an_update_changes_only_what_is_given_and_something_must_be() {
        let id = Uuid::now_v7();
        let parse = |args: &[&str]| {
            let cli =
                crate::cli::Cli::try_parse_from([&["flexctl", "schedule", "update", "ab12"], args].concat()).unwrap();
            let crate::cli::Command::Schedule(ScheduleCommand::Update(update)) = cli.command else {
                panic!("not schedule update")
            };
            update
        };
        let update = parse(&["--cron", "*/5 * * * *", "--overlap", "buffer-one"])
            .command(id)
            .unwrap();
        assert_eq!(update.cron.as_deref(), Some("*/5 * * * *"));
        assert_eq!(update.overlap, Some(OverlapPolicy::BufferOne));
        assert_eq!((update.timezone, update.jitter_seconds), (None, None));
        let error = parse(&[]).command(id).unwrap_err().to_string();
        assert!(error.contains("nothing to update"), "{error}");
    }

    #[test]
    fn list_states_are_the_lifecycle_s() {
        let error = crate::cli::Cli::try_parse_from(["flexctl", "schedule", "list", "--state", "bogus"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("active, paused, deleted"), "{error}");
        assert!(crate::cli::Cli::try_parse_from(["flexctl", "schedule", "list", "--state", "paused"]).is_ok());
    }
}
