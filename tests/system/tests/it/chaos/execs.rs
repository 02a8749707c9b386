//! Which plugin executions really happened, against the log: no finished run is executed
//! again.
//!
//! Every chaos pipeline's extractor is a small shell tap (a `process` plugin) that first
//! appends one line to an execution log: its pipeline's name, the wall-clock time it
//! started and the STATE it resumes from (the `--state` file: the bookmark the attempt's
//! `run.claimed` pinned). Only an attempt that holds a claim may run, so every execution
//! must fall inside the window of an attempt of that pipeline which resumed from the same
//! STATE: after its `run.claimed` was committed and before the event that ended it. An
//! execution after the attempt's run had finished re-ran finished work (its records were
//! loaded twice), which the log itself cannot show when the re-run's reports are answered
//! as repeats of the first. The other direction keeps the detector honest: every
//! succeeded attempt must have its execution in the log.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use flexcore_contracts::events::{PipelineCreated, RunClaimed, RunRequested};
use uuid::Uuid;

use super::log::LogEvent;

/// The tap: logs the execution, then a SCHEMA, `records` RECORDs, a pause (0.3 s, or the
/// config's `pause` seconds; so that a kill can land in the middle of a run) and a STATE
/// unique to this execution.
pub fn tap_script(execution_log: &Path) -> String {
    format!(
        r#"#!/bin/sh
# FlexCore chaos tap (see tests/system/tests/it/chaos/execs.rs).
PATH=/usr/bin:/bin
config=""; state=""
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --state) state="$2"; shift 2 ;;
    *) shift ;;
  esac
done
tag=$(sed -n 's/.*"tag":"\([^"]*\)".*/\1/p' "$config")
records=$(sed -n 's/.*"records":\([0-9]*\).*/\1/p' "$config")
pause=$(sed -n 's/.*"pause":\([0-9.]*\).*/\1/p' "$config")
start=$(date +%s%N)
if [ -n "$state" ]; then resume=$(tr -d '\n' < "$state"); else resume=null; fi
printf '%s\t%s\t%s\n' "$tag" "$start" "$resume" >> '{log}'
printf '%s\n' '{{"type":"SCHEMA","stream":"rows","schema":{{"type":"object"}},"key_properties":["id"]}}'
i=1
while [ "$i" -le "$records" ]; do
  printf '{{"type":"RECORD","stream":"rows","record":{{"id":%d,"execution":"%s"}}}}\n' "$i" "$start"
  i=$((i + 1))
done
sleep "${{pause:-0.3}}"
printf '{{"type":"STATE","value":{{"execution":"%s:%s"}}}}\n' "$tag" "$start"
"#,
        log = execution_log.display()
    )
}

/// One line of the execution log.
#[derive(Debug, Clone)]
pub struct Execution {
    /// The pipeline's name.
    pub pipeline: String,
    /// When the tap started.
    pub at: DateTime<Utc>,
    /// The STATE it resumed from (`null` without one).
    pub resume: String,
}

/// The execution log's lines.
pub fn read(path: &Path) -> Vec<Execution> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(3, '\t');
            let (Some(pipeline), Some(at), Some(resume)) = (parts.next(), parts.next(), parts.next()) else {
                panic!("malformed execution log line {line:?}");
            };
            Execution {
                pipeline: pipeline.to_owned(),
                at: DateTime::from_timestamp_nanos(at.parse().unwrap()),
                resume: resume.to_owned(),
            }
        })
        .collect()
}

/// An attempt's window, from the log.
#[derive(Debug)]
struct Window {
    run: Uuid,
    attempt: u32,
    pipeline: String,
    resume: String,
    claimed_at: DateTime<Utc>,
    /// When the attempt ended (its outcome, a later attempt, or the run's end).
    ended_at: Option<DateTime<Utc>>,
    succeeded: bool,
    /// When the run reached its final state.
    run_final_at: Option<DateTime<Utc>>,
}

fn windows(log: &[LogEvent]) -> Vec<Window> {
    let names: BTreeMap<Uuid, String> = log
        .iter()
        .filter(|e| e.event_type == "pipeline.created")
        .map(|e| (e.aggregate_id, e.decode::<PipelineCreated>().name.to_string()))
        .collect();
    let mut runs: BTreeMap<Uuid, Vec<&LogEvent>> = BTreeMap::new();
    for e in log.iter().filter(|e| e.aggregate_type == "run") {
        runs.entry(e.aggregate_id).or_default().push(e);
    }
    let mut out = Vec::new();
    for (run, mut events) in runs {
        events.sort_by_key(|e| e.version);
        let requested: RunRequested = events[0].decode();
        let pipeline = names.get(&requested.pipeline_id).cloned().unwrap_or_default();
        let run_final_at = events
            .iter()
            .find(|e| {
                let data: serde_json::Value = e.decode();
                matches!(e.event_type.as_str(), "run.succeeded" | "run.cancelled")
                    || (matches!(e.event_type.as_str(), "run.failed" | "run.timed_out") && data["final"] == true)
            })
            .map(|e| e.recorded_at);
        for (i, claim) in events.iter().enumerate().filter(|(_, e)| e.event_type == "run.claimed") {
            let claimed: RunClaimed = claim.decode();
            let end = events[i + 1..].iter().find(|e| {
                let data: serde_json::Value = e.decode();
                let of_this = data["attempt"].as_u64() == Some(u64::from(claimed.attempt));
                matches!(e.event_type.as_str(), "run.cancelled")
                    || (of_this && matches!(e.event_type.as_str(), "run.succeeded" | "run.failed" | "run.timed_out"))
                    || (e.event_type == "run.retried" && !of_this)
            });
            out.push(Window {
                run,
                attempt: claimed.attempt,
                pipeline: pipeline.clone(),
                resume: claimed.resume_state.as_str().to_owned(),
                claimed_at: claim.recorded_at,
                ended_at: end.map(|e| e.recorded_at),
                succeeded: end.is_some_and(|e| e.event_type == "run.succeeded"),
                run_final_at,
            });
        }
    }
    out
}

/// What the execution log shows.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Executions of finished runs, or without any claim: must be none.
    pub violations: Vec<String>,
    /// Executions of an attempt that had already ended while its run went on (a later
    /// attempt took over): duplicate loading inside a run, reported.
    pub stale: Vec<String>,
    /// How many executions were logged.
    pub executions: usize,
}

/// Checks the executions against the log.
pub fn check(executions: &[Execution], log: &[LogEvent]) -> Verdict {
    // The log's timestamps are the committing transactions' start times; the tap reads the
    // same clock. A second of slack on each side only forgives scheduling noise: a re-run
    // of finished work waits for the lease to lapse first (seconds).
    let slack = TimeDelta::seconds(1);
    let windows = windows(log);
    let mut verdict = Verdict {
        executions: executions.len(),
        ..Verdict::default()
    };
    for x in executions {
        let candidates: Vec<&Window> = windows
            .iter()
            .filter(|w| w.pipeline == x.pipeline && w.resume == x.resume && w.claimed_at <= x.at + slack)
            .collect();
        if candidates
            .iter()
            .any(|w| w.ended_at.is_none_or(|end| x.at <= end + slack))
        {
            continue;
        }
        let describe = |w: &Window| {
            format!(
                "{} started {} resuming from {}: run {} attempt {} claimed {}, ended {:?}, run final {:?}",
                x.pipeline, x.at, x.resume, w.run, w.attempt, w.claimed_at, w.ended_at, w.run_final_at
            )
        };
        match candidates.iter().max_by_key(|w| w.claimed_at) {
            None => verdict.violations.push(format!(
                "{} started {} resuming from {} without any claim of that pipeline and STATE",
                x.pipeline, x.at, x.resume
            )),
            Some(w) if w.run_final_at.is_some_and(|fin| x.at > fin + slack) => {
                verdict
                    .violations
                    .push(format!("finished run executed again: {}", describe(w)));
            }
            Some(w) => verdict
                .stale
                .push(format!("ended attempt executed again: {}", describe(w))),
        }
    }
    for w in windows.iter().filter(|w| w.succeeded) {
        let seen = executions.iter().any(|x| {
            x.pipeline == w.pipeline
                && x.resume == w.resume
                && w.claimed_at <= x.at + slack
                && w.ended_at.is_none_or(|end| x.at <= end + slack)
        });
        if !seen {
            verdict.violations.push(format!(
                "run {} attempt {} of {} succeeded, but no execution of it was logged",
                w.run, w.attempt, w.pipeline
            ));
        }
    }
    verdict
}
