//! `flexctl bench schedules`: N schedules firing every minute for M minutes against a
//! running stack (command service and one or more schedulers). Each schedule gets its own
//! pipeline (overlap `allow`, room for every run, so no slot is skipped for lack of a
//! runner); the schedules start at a minute boundary far enough ahead for the setup and end
//! M minutes later, so exactly N × M runs are due. The figures come from the `run.requested`
//! events on the bus: fire lag = the event's `recorded_at` (the request's commit) minus its
//! slot, duplicates and missing slots by (schedule, slot), and the RSS of every
//! `flexcore-scheduler` process on this machine.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, DurationRound, Utc};
use flexcore_contracts::commands::CreateSchedule;
use flexcore_contracts::envelope::EventEnvelope;
use flexcore_contracts::events::RunRequested;
use flexcore_contracts::model::OverlapPolicy;
use flexcore_contracts::subjects;
use futures::future::try_join_all;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use uuid::Uuid;

use flexctl::nats::Nats;

use super::commands::{connect, send, Outcome, CLIENTS_PER_CONNECTION};
use super::setup;
use super::stats::LatencySummary;

/// Pipelines or schedules created per round of concurrent requests.
const SETUP_BATCH: usize = 1000;

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleFigures {
    /// Schedules.
    pub schedules: usize,
    /// Minutes (slots per schedule).
    pub minutes: u32,
    /// Runs that were due.
    pub expected_runs: usize,
    /// Distinct (schedule, slot) runs seen.
    pub runs: usize,
    /// Runs seen twice for one slot.
    pub duplicates: usize,
    /// Due slots without a run.
    pub missing: usize,
    /// Slots recorded as skipped or missed.
    pub skipped_or_missed: usize,
    /// Fire lag: commit of the request minus slot time.
    pub fire_lag: LatencySummary,
    /// Resident memory of each scheduler process: (pid, current KiB, peak KiB).
    pub scheduler_rss_kib: Vec<(u32, u64, u64)>,
}

impl ScheduleFigures {
    /// Human-readable lines.
    pub fn text(&self) -> String {
        let rss: Vec<String> = self
            .scheduler_rss_kib
            .iter()
            .map(|(pid, now, peak)| {
                format!(
                    "pid {pid}: {:.1} MiB (peak {:.1} MiB)",
                    *now as f64 / 1024.0,
                    *peak as f64 / 1024.0
                )
            })
            .collect();
        format!(
            "schedules {} × {} min: {} runs due, {} fired, {} duplicate(s), {} missing, {} skipped/missed\n\
             fire lag  p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms\n\
             scheduler RSS  {}\n",
            self.schedules,
            self.minutes,
            self.expected_runs,
            self.runs,
            self.duplicates,
            self.missing,
            self.skipped_or_missed,
            self.fire_lag.p50_ms,
            self.fire_lag.p95_ms,
            self.fire_lag.p99_ms,
            self.fire_lag.max_ms,
            if rss.is_empty() {
                "no flexcore-scheduler process found".to_owned()
            } else {
                rss.join(", ")
            }
        )
    }
}

/// Runs the benchmark.
pub async fn run(nats: &Nats, schedules: usize, minutes: u32) -> anyhow::Result<ScheduleFigures> {
    let connections = connect(nats, schedules.min(SETUP_BATCH)).await?;
    setup::register_plugins(&connections[0]).await?;
    // Setup takes about a second per 2,000 commands; start at the first minute after it.
    let setup_estimate = chrono::Duration::seconds(10 + (schedules as i64) / 1000);
    let first = (Utc::now() + setup_estimate)
        .duration_trunc(chrono::Duration::minutes(1))
        .context("rounding to the minute")?
        + chrono::Duration::minutes(1);
    let last = first + chrono::Duration::minutes(i64::from(minutes) - 1);
    let mut pipelines = Vec::with_capacity(schedules);
    while pipelines.len() < schedules {
        let n = (schedules - pipelines.len()).min(SETUP_BATCH);
        pipelines.extend(setup::create_pipelines(&connections, n, minutes + 1).await?);
    }
    for chunk in pipelines.chunks(SETUP_BATCH) {
        let created = chunk.iter().enumerate().map(|(i, pipeline)| {
            let client = &connections[i / CLIENTS_PER_CONNECTION % connections.len()];
            async move {
                // end_at half a minute after the last slot: after start_at even for one minute.
                let body = CreateSchedule {
                    schedule_id: None,
                    pipeline_id: *pipeline,
                    cron: "* * * * *".to_owned(),
                    timezone: "UTC".to_owned(),
                    overlap: OverlapPolicy::Allow,
                    catchup_window_seconds: 3600,
                    catchup_cap: 1,
                    jitter_seconds: 0,
                    start_at: Some(first),
                    end_at: Some(last + chrono::Duration::seconds(30)),
                    paused: false,
                };
                match send(client, &body).await {
                    Outcome::Accepted => Ok(()),
                    Outcome::Rejected(e) => Err(anyhow::anyhow!("schedule.create refused: {e}")),
                    Outcome::Failed(_, why) => Err(anyhow::anyhow!("schedule.create: {why}")),
                }
            }
        });
        try_join_all(created).await?;
    }
    tracing::info!(schedules, %first, %last, "schedules created; waiting for their slots");

    let client = connections[0].nats();
    let mut requested = client.subscribe(subjects::events_of_type("run")).await?;
    let mut skipped = client.subscribe(subjects::events_of_type("schedule")).await?;
    let expected_runs = schedules * minutes as usize;
    let deadline = last + chrono::Duration::seconds(30);
    let mut seen: HashMap<(Uuid, DateTime<Utc>), u32> = HashMap::with_capacity(expected_runs);
    let mut lag = Histogram::<u64>::new(3)?;
    let mut skipped_or_missed = 0usize;
    loop {
        let left = (deadline - Utc::now()).to_std().unwrap_or_default();
        if left.is_zero() || seen.len() >= expected_runs {
            break;
        }
        tokio::select! {
            message = requested.next() => {
                let Some(message) = message else { break };
                let Ok(event) = serde_json::from_slice::<EventEnvelope>(&message.payload) else { continue };
                if event.event_type != "run.requested" {
                    continue;
                }
                let Ok(RunRequested { schedule_id: Some(schedule), scheduled_for: Some(slot), .. }) = event.data.decode() else {
                    continue;
                };
                if slot < first || slot > last {
                    continue;
                }
                *seen.entry((schedule, slot)).or_default() += 1;
                let micros = (event.recorded_at - slot).num_microseconds().unwrap_or(0).max(0);
                lag.record(u64::try_from(micros).unwrap_or(0))?;
            }
            message = skipped.next() => {
                let Some(message) = message else { break };
                if message.subject.ends_with(".slot_skipped") || message.subject.ends_with(".slots_missed") {
                    skipped_or_missed += 1;
                }
            }
            () = tokio::time::sleep(left.min(Duration::from_secs(5))) => {
                tracing::info!(fired = seen.len(), expected_runs, "waiting");
            }
        }
    }
    let duplicates = seen.values().filter(|n| **n > 1).count();
    let missing = expected_runs.saturating_sub(seen.len());
    Ok(ScheduleFigures {
        schedules,
        minutes,
        expected_runs,
        runs: seen.len(),
        duplicates,
        missing,
        skipped_or_missed,
        fire_lag: LatencySummary::of(&lag),
        scheduler_rss_kib: scheduler_rss(),
    })
}

/// (pid, VmRSS, VmHWM) in KiB of every process named `flexcore-scheduler`.
fn scheduler_rss() -> Vec<(u32, u64, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let field = |status: &str, name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            // The kernel truncates process names to 15 characters.
            status
                .lines()
                .next()?
                .ends_with("flexcore-schedu")
                .then(|| (pid, field(&status, "VmRSS:"), field(&status, "VmHWM:")))
        })
        .collect()
}
