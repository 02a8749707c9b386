//! The read models against a fold of the log: the test folds the events itself, by the
//! contract's meaning of each event (not by the projection's code), into what each view
//! must show, then asks the projection service for every plugin, pipeline, run and
//! schedule (`get` and every page of `list`), the statistics and the audit log, and
//! compares. An event applied twice or lost by a projection during the faults shows up
//! as a wrong version, state, count or bookmark.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use flexcore_client::Retry;
use flexcore_contracts::events::{
    PipelineCreated, PipelineStateCommitted, PipelineUpdated, RunCheckpointed, RunClaimed, RunFailed, RunRequested,
    RunSucceeded, RunTimedOut, ScheduleCreated, ScheduleSlotsMissed,
};
use flexcore_contracts::model::{RunTrigger, StreamCounters};
use flexcore_contracts::views::{PipelineView, PluginView, RunView, ScheduleView, StatsView};
use flexcore_contracts::EventEnvelope;
use serde::de::DeserializeOwned;
use serde_json::json;
use uuid::Uuid;

use super::log::LogEvent;

/// What `plugin.*` queries must show of a plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginDigest {
    name: String,
    version: String,
    state: String,
    aggregate_version: u64,
}

/// What `pipeline.*` queries must show of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineDigest {
    name: String,
    description: Option<String>,
    state: String,
    definition_version: u32,
    /// The exact text of the latest committed STATE.
    bookmark: String,
    bookmark_run_id: Option<Uuid>,
    bookmark_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    aggregate_version: u64,
}

/// What `run.*` queries must show of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptDigest {
    attempt: u32,
    runner_id: Option<String>,
    claimed_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    outcome: Option<String>,
}

/// What `run.*` queries must show of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDigest {
    pipeline_id: Uuid,
    pub(super) state: String,
    trigger: RunTrigger,
    schedule_id: Option<Uuid>,
    scheduled_for: Option<DateTime<Utc>>,
    attempt: u32,
    attempts: Vec<AttemptDigest>,
    counters: StreamCounters,
    records_total: u64,
    /// The exact text of the last checkpointed STATE.
    last_state: String,
    requested_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    aggregate_version: u64,
}

/// What `schedule.*` queries must show of a schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleDigest {
    pipeline_id: Uuid,
    state: String,
    slots_skipped: u64,
    slots_missed: u64,
    updated_at: DateTime<Utc>,
    aggregate_version: u64,
}

/// The views the log implies.
#[derive(Debug, Default)]
pub struct Fold {
    /// By plugin id.
    pub plugins: BTreeMap<Uuid, PluginDigest>,
    /// By pipeline id.
    pub pipelines: BTreeMap<Uuid, PipelineDigest>,
    /// By run id.
    pub runs: BTreeMap<Uuid, RunDigest>,
    /// By schedule id.
    pub schedules: BTreeMap<Uuid, ScheduleDigest>,
}

/// Folds `log` (in its reading order).
pub fn fold(log: &[LogEvent]) -> Fold {
    let mut f = Fold::default();
    for e in log {
        let at = e.recorded_at;
        let version = e.version as u64;
        match e.aggregate_type.as_str() {
            "plugin" => {
                let state = match e.event_type.as_str() {
                    "plugin.registered" | "plugin.enabled" => "active",
                    "plugin.deprecated" => "deprecated",
                    "plugin.disabled" => "disabled",
                    other => panic!("unknown plugin event {other}"),
                };
                if e.event_type == "plugin.registered" {
                    let data: serde_json::Value = e.decode();
                    f.plugins.insert(
                        e.aggregate_id,
                        PluginDigest {
                            name: data["name"].as_str().unwrap().to_owned(),
                            version: data["version"].as_str().unwrap().to_owned(),
                            state: String::new(),
                            aggregate_version: 0,
                        },
                    );
                }
                let p = f.plugins.get_mut(&e.aggregate_id).unwrap();
                p.state = state.to_owned();
                p.aggregate_version = version;
            }
            "pipeline" => {
                if e.event_type == "pipeline.created" {
                    let c: PipelineCreated = e.decode();
                    f.pipelines.insert(
                        e.aggregate_id,
                        PipelineDigest {
                            name: c.name.to_string(),
                            description: c.description,
                            state: "active".into(),
                            definition_version: 1,
                            bookmark: "null".into(),
                            bookmark_run_id: None,
                            bookmark_at: None,
                            created_at: at,
                            updated_at: at,
                            aggregate_version: version,
                        },
                    );
                    continue;
                }
                let p = f.pipelines.get_mut(&e.aggregate_id).unwrap();
                match e.event_type.as_str() {
                    "pipeline.updated" => {
                        let u: PipelineUpdated = e.decode();
                        p.definition_version = u.definition_version;
                        p.description = u.description;
                    }
                    "pipeline.paused" => p.state = "paused".into(),
                    "pipeline.resumed" => p.state = "active".into(),
                    "pipeline.archived" => p.state = "archived".into(),
                    "pipeline.state_committed" => {
                        let s: PipelineStateCommitted = e.decode();
                        p.bookmark = s.state.as_str().to_owned();
                        p.bookmark_run_id = s.run_id;
                        p.bookmark_at = Some(at);
                    }
                    other => panic!("unknown pipeline event {other}"),
                }
                p.updated_at = at;
                p.aggregate_version = version;
            }
            "run" => fold_run(&mut f, e),
            "schedule" => {
                if e.event_type == "schedule.created" {
                    let c: ScheduleCreated = e.decode();
                    f.schedules.insert(
                        e.aggregate_id,
                        ScheduleDigest {
                            pipeline_id: c.pipeline_id,
                            state: if c.paused { "paused" } else { "active" }.into(),
                            slots_skipped: 0,
                            slots_missed: 0,
                            updated_at: at,
                            aggregate_version: version,
                        },
                    );
                    continue;
                }
                let s = f.schedules.get_mut(&e.aggregate_id).unwrap();
                match e.event_type.as_str() {
                    "schedule.updated" => {}
                    "schedule.paused" => s.state = "paused".into(),
                    "schedule.resumed" => s.state = "active".into(),
                    "schedule.deleted" => s.state = "deleted".into(),
                    "schedule.slot_skipped" => s.slots_skipped += 1,
                    "schedule.slots_missed" => s.slots_missed += e.decode::<ScheduleSlotsMissed>().slots.len() as u64,
                    other => panic!("unknown schedule event {other}"),
                }
                s.updated_at = at;
                s.aggregate_version = version;
            }
            other => panic!("unknown aggregate type {other}"),
        }
    }
    f
}

fn fold_run(f: &mut Fold, e: &LogEvent) {
    let at = e.recorded_at;
    if e.event_type == "run.requested" {
        let r: RunRequested = e.decode();
        f.runs.insert(
            e.aggregate_id,
            RunDigest {
                pipeline_id: r.pipeline_id,
                state: "requested".into(),
                trigger: r.trigger,
                schedule_id: r.schedule_id,
                scheduled_for: r.scheduled_for,
                attempt: r.attempt,
                attempts: vec![pending(r.attempt)],
                counters: StreamCounters::new(),
                records_total: 0,
                last_state: "null".into(),
                requested_at: at,
                started_at: None,
                finished_at: None,
                updated_at: at,
                aggregate_version: e.version as u64,
            },
        );
        return;
    }
    let r = f.runs.get_mut(&e.aggregate_id).unwrap();
    let data: serde_json::Value = e.decode();
    let n = data["attempt"].as_u64().unwrap() as u32;
    if !r.attempts.iter().any(|a| a.attempt == n) {
        r.attempts.push(pending(n));
    }
    let index = r.attempts.iter().position(|a| a.attempt == n).unwrap();
    // The run's counters are the current attempt's latest report.
    let end = |r: &mut RunDigest, outcome: &str, counters: Option<StreamCounters>, final_state: Option<&str>| {
        let a = &mut r.attempts[index];
        a.outcome = Some(outcome.to_owned());
        a.ended_at = Some(at);
        if let Some(c) = counters {
            r.records_total = c.values().sum();
            r.counters = c;
        }
        match final_state {
            Some(state) => {
                r.state = state.to_owned();
                r.finished_at = Some(at);
            }
            None => r.state = "awaiting_retry".into(),
        }
    };
    match e.event_type.as_str() {
        "run.claimed" => {
            let c: RunClaimed = e.decode();
            r.attempt = n;
            r.state = "running".into();
            r.started_at.get_or_insert(at);
            r.counters = StreamCounters::new();
            r.records_total = 0;
            r.attempts[index].runner_id = Some(c.runner_id.to_string());
            r.attempts[index].claimed_at = Some(at);
        }
        "run.checkpointed" => {
            let c: RunCheckpointed = e.decode();
            r.last_state = c.state.as_str().to_owned();
            r.records_total = c.counters.values().sum();
            r.counters = c.counters;
        }
        "run.succeeded" => {
            let s: RunSucceeded = e.decode();
            end(r, "succeeded", Some(s.counters), Some("succeeded"));
        }
        "run.failed" => {
            let x: RunFailed = e.decode();
            end(r, "failed", Some(x.counters), x.is_final.then_some("failed"));
        }
        "run.timed_out" => {
            let t: RunTimedOut = e.decode();
            end(r, "timed_out", None, t.is_final.then_some("timed_out"));
        }
        "run.cancelled" => {
            if r.attempts[index].outcome.is_none() {
                end(r, "cancelled", None, Some("cancelled"));
            } else {
                r.state = "cancelled".into();
                r.finished_at = Some(at);
            }
        }
        "run.retried" => {
            r.attempt = n;
            r.state = "requested".into();
        }
        other => panic!("unknown run event {other}"),
    }
    r.updated_at = at;
    r.aggregate_version = e.version as u64;
}

fn pending(attempt: u32) -> AttemptDigest {
    AttemptDigest {
        attempt,
        runner_id: None,
        claimed_at: None,
        ended_at: None,
        outcome: None,
    }
}

fn plugin_digest(v: &PluginView) -> PluginDigest {
    PluginDigest {
        name: v.name.clone(),
        version: v.version.clone(),
        state: v.state.clone(),
        aggregate_version: v.aggregate_version,
    }
}

fn pipeline_digest(v: &PipelineView) -> PipelineDigest {
    PipelineDigest {
        name: v.name.clone(),
        description: v.description.clone(),
        state: v.state.clone(),
        definition_version: v.definition_version,
        bookmark: v.bookmark.as_str().to_owned(),
        bookmark_run_id: v.bookmark_run_id,
        bookmark_at: v.bookmark_at,
        created_at: v.created_at,
        updated_at: v.updated_at,
        aggregate_version: v.aggregate_version,
    }
}

fn run_digest(v: &RunView) -> RunDigest {
    RunDigest {
        pipeline_id: v.pipeline_id,
        state: v.state.clone(),
        trigger: v.trigger,
        schedule_id: v.schedule_id,
        scheduled_for: v.scheduled_for,
        attempt: v.attempt,
        attempts: v
            .attempts
            .iter()
            .map(|a| AttemptDigest {
                attempt: a.attempt,
                runner_id: a.runner_id.clone(),
                claimed_at: a.claimed_at,
                ended_at: a.ended_at,
                outcome: a.outcome.clone(),
            })
            .collect(),
        counters: v.counters.clone(),
        records_total: v.records_total,
        last_state: v.last_state.as_str().to_owned(),
        requested_at: v.requested_at,
        started_at: v.started_at,
        finished_at: v.finished_at,
        updated_at: v.updated_at,
        aggregate_version: v.aggregate_version,
    }
}

fn schedule_digest(v: &ScheduleView) -> ScheduleDigest {
    ScheduleDigest {
        pipeline_id: v.pipeline_id,
        state: v.state.clone(),
        slots_skipped: v.slots_skipped,
        slots_missed: v.slots_missed,
        updated_at: v.updated_at,
        aggregate_version: v.aggregate_version,
    }
}

/// `data` of query `name`, and the next page's cursor.
async fn query<T: DeserializeOwned>(
    api: &flexcore_client::Client,
    name: &str,
    body: serde_json::Value,
) -> (T, Option<String>) {
    let ok = api
        .query_raw(name, &body, &Retry::attempts(10))
        .await
        .unwrap_or_else(|e| panic!("{name} {body}: {e}"));
    let data = ok.data.decode().unwrap_or_else(|e| panic!("{name}: {e}"));
    (data, ok.next_cursor)
}

/// Every page of list query `name`.
async fn list<T: DeserializeOwned>(api: &flexcore_client::Client, name: &str) -> Vec<T> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut body = json!({"limit": 1000, "sort_by": "time", "order": "asc"});
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let (page, next): (Vec<T>, _) = query(api, name, body).await;
        all.extend(page);
        match next {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
}

/// Compares one view (`get` of each id and every item of `list`) with the fold.
async fn compare<V: DeserializeOwned, D: PartialEq + std::fmt::Debug>(
    api: &flexcore_client::Client,
    view: &str,
    expected: &BTreeMap<Uuid, D>,
    id_of: fn(&V) -> Uuid,
    digest: fn(&V) -> D,
    problems: &mut Vec<String>,
) {
    let listed: Vec<V> = list(api, &format!("{view}.list")).await;
    let mut seen = BTreeSet::new();
    for item in &listed {
        let id = id_of(item);
        if !seen.insert(id) {
            problems.push(format!("{view}.list lists {id} twice"));
        }
        match expected.get(&id) {
            None => problems.push(format!("{view}.list lists {id}, which the log does not have")),
            Some(want) if *want != digest(item) => {
                problems.push(format!("{view}.list {id}:\n  view {:?}\n  log  {want:?}", digest(item)))
            }
            Some(_) => {}
        }
    }
    for (id, want) in expected {
        if !seen.contains(id) {
            problems.push(format!("{view}.list misses {id}"));
        }
        let (got, _): (V, _) = query(api, &format!("{view}.get"), json!({"id": id})).await;
        if digest(&got) != *want {
            problems.push(format!("{view}.get {id}:\n  view {:?}\n  log  {want:?}", digest(&got)));
        }
    }
}

fn counts<'a>(states: impl Iterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for s in states {
        *out.entry(s.to_owned()).or_insert(0) += 1;
    }
    out
}

fn nonzero(map: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    map.iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (k.clone(), *n))
        .collect()
}

/// Differences between the projection service's answers and the fold of `log` (empty
/// when they agree). Call once the projections have caught up with the whole log.
pub async fn compare_views(api: &flexcore_client::Client, log: &[LogEvent]) -> Vec<String> {
    let f = fold(log);
    let mut problems = Vec::new();
    compare(
        api,
        "plugin",
        &f.plugins,
        |v: &PluginView| v.plugin_id,
        plugin_digest,
        &mut problems,
    )
    .await;
    compare(
        api,
        "pipeline",
        &f.pipelines,
        |v: &PipelineView| v.pipeline_id,
        pipeline_digest,
        &mut problems,
    )
    .await;
    compare(api, "run", &f.runs, |v: &RunView| v.run_id, run_digest, &mut problems).await;
    compare(
        api,
        "schedule",
        &f.schedules,
        |v: &ScheduleView| v.schedule_id,
        schedule_digest,
        &mut problems,
    )
    .await;
    let (stats, _): (StatsView, _) = query(api, "stats.get", json!({})).await;
    let expected = [
        (
            "plugins",
            &stats.plugins,
            counts(f.plugins.values().map(|p| p.state.as_str())),
        ),
        (
            "pipelines",
            &stats.pipelines,
            counts(f.pipelines.values().map(|p| p.state.as_str())),
        ),
        ("runs", &stats.runs, counts(f.runs.values().map(|r| r.state.as_str()))),
        (
            "schedules",
            &stats.schedules,
            counts(f.schedules.values().map(|s| s.state.as_str())),
        ),
    ];
    for (what, got, want) in expected {
        if nonzero(got) != want {
            problems.push(format!("stats.get {what}: {got:?}, the log says {want:?}"));
        }
    }
    // The audit log: every event once, in position order.
    let mut audit: Vec<EventEnvelope> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut body = json!({"limit": 1000, "order": "asc"});
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let (page, next): (Vec<EventEnvelope>, _) = query(api, "event.list", body).await;
        audit.extend(page);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut by_position: Vec<&LogEvent> = log.iter().collect();
    by_position.sort_by_key(|e| e.position);
    let want: Vec<(u64, Uuid)> = by_position.iter().map(|e| (e.position as u64, e.event_id)).collect();
    let got: Vec<(u64, Uuid)> = audit.iter().map(|e| (e.global_position, e.event_id)).collect();
    if got != want {
        problems.push(format!(
            "event.list holds {} events, the log {}; first difference at {:?}",
            got.len(),
            want.len(),
            got.iter().zip(&want).position(|(a, b)| a != b)
        ));
    }
    for (envelope, event) in audit.iter().zip(&by_position) {
        if envelope.data.as_str() != event.data {
            problems.push(format!(
                "event.list {} data {} ≠ {}",
                event.event_id,
                envelope.data.as_str(),
                event.data
            ));
            break;
        }
    }
    problems
}
