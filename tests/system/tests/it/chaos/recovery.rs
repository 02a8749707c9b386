//! How long the system takes to serve again after a fault, measured from the moment the
//! fault ended (the process started again, the server accepted connections again) by a
//! probe that runs alongside the load: a command accepted, a query that reflects it, a
//! run requested after the fault that completes, and a schedule created after the fault
//! that fires (the scheduler learns of it from the event stream, so this shows that it
//! follows the stream again). The bound is not a performance claim:
//! a system that has not recovered within it counts as not recovering.

use std::time::{Duration, Instant};

use flexcore_client::{command_id, Retry};
use flexcore_contracts::commands::{CreateSchedule, DeleteSchedule, RequestRun};
use flexcore_contracts::views::PipelineView;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::load::{body, commit_state, Outcome, Sender};

/// Recovery after one fault.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// The fault.
    pub fault: String,
    /// Its round.
    pub round: usize,
    /// When the restarted service logged its ready line.
    pub ready: Option<Duration>,
    /// Until a command was accepted.
    pub command: Duration,
    /// Until a query reflected that command.
    pub query: Duration,
    /// Until a run requested after the fault succeeded.
    pub run: Duration,
    /// Until a schedule created after the fault fired.
    pub schedule: Duration,
    /// What took over from a killed leader or owner, and how long after the kill.
    pub failover: Vec<(String, Duration)>,
}

/// Retries every 100 ms: the probe measures, so it must not back off for long.
fn eager(stop: &CancellationToken) -> Retry {
    Retry {
        max_attempts: None,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(100),
        stop: Some(stop.clone()),
    }
}

/// Probes until the system serves again after a fault that ended at `ended`; fails the
/// test when a step has not happened within `bound` of it.
pub async fn probe(
    sender: &Sender,
    db: &PgPool,
    pipeline: Uuid,
    n: usize,
    ended: Instant,
    bound: Duration,
) -> (Duration, Duration, Duration, Duration) {
    let stop = CancellationToken::new();
    let _cancel_on_return = stop.clone().drop_guard();
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until((ended + bound).into()).await;
            stop.cancel();
        })
    };
    let scope = Uuid::new_v5(&Uuid::NAMESPACE_OID, b"flexcore-chaos-probe");
    let state = format!(r#"{{"probe":{n},"exact":1.10}}"#);
    let commit = commit_state(pipeline, &state);
    let accepted = match sender
        .send_with(&commit, command_id(scope, &format!("commit:{n}")), eager(&stop))
        .await
    {
        Outcome::Accepted(a) => a,
        other => panic!("probe {n}: no command accepted within {bound:?} of the fault's end: {other:?}"),
    };
    let command = ended.elapsed();

    let query = loop {
        let request = json!({"id": pipeline, "min_position": accepted.global_position});
        let answer = sender.api.query_raw("pipeline.get", &request, &Retry::once()).await;
        if let Ok(view) = answer.map(|ok| ok.data.decode::<PipelineView>()) {
            if view.is_ok_and(|v| v.bookmark.as_str() == state) {
                break ended.elapsed();
            }
        }
        assert!(
            !stop.is_cancelled(),
            "probe {n}: no query reflected the command within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let run_id = command_id(scope, &format!("run:{n}"));
    let request: RequestRun = body(json!({"run_id": run_id, "pipeline_id": pipeline}));
    match sender
        .send_with(&request, command_id(scope, &format!("request:{n}")), eager(&stop))
        .await
    {
        Outcome::Accepted(_) => {}
        other => panic!("probe {n}: run.request not accepted within {bound:?}: {other:?}"),
    }
    let run = loop {
        let done: Option<String> = sqlx::query_scalar(
            "SELECT event_type FROM events WHERE aggregate_id = $1 \
              AND event_type IN ('run.succeeded', 'run.failed', 'run.cancelled', 'run.timed_out') \
              AND (event_type = 'run.succeeded' OR (data::jsonb)->>'final' = 'true')",
        )
        .bind(run_id)
        .fetch_optional(db)
        .await
        .ok()
        .flatten();
        match done.as_deref() {
            Some("run.succeeded") => break ended.elapsed(),
            Some(other) => panic!("probe {n}: run {run_id} ended {other}"),
            None => {}
        }
        assert!(
            !stop.is_cancelled(),
            "probe {n}: run {run_id} did not complete within {bound:?} of the fault's end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // A schedule firing every second, created now: it fires once the scheduler has read
    // its creation from the stream.
    let schedule_id = command_id(scope, &format!("schedule:{n}"));
    let create: CreateSchedule = body(json!({"schedule_id": schedule_id, "pipeline_id": pipeline,
                                             "cron": "* * * * * *", "overlap": "skip"}));
    match sender
        .send_with(
            &create,
            command_id(scope, &format!("create-schedule:{n}")),
            eager(&stop),
        )
        .await
    {
        Outcome::Accepted(_) => {}
        other => panic!("probe {n}: schedule.create not accepted within {bound:?}: {other:?}"),
    }
    let schedule = loop {
        let fired: Option<i64> = sqlx::query_scalar(
            "SELECT global_position FROM events WHERE event_type = 'run.requested' \
              AND (data::jsonb)->>'schedule_id' = $1 LIMIT 1",
        )
        .bind(schedule_id.to_string())
        .fetch_optional(db)
        .await
        .ok()
        .flatten();
        if fired.is_some() {
            break ended.elapsed();
        }
        assert!(
            !stop.is_cancelled(),
            "probe {n}: schedule {schedule_id} did not fire within {bound:?} of the fault's end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let delete: DeleteSchedule = body(json!({"schedule_id": schedule_id}));
    sender
        .send(&delete, command_id(scope, &format!("delete-schedule:{n}")))
        .await;
    timer.abort();
    (command, query, run, schedule)
}

/// Median and maximum of each recovery step per fault, as a Markdown table (seconds).
pub fn summary(recoveries: &[Recovery]) -> String {
    let mut faults: Vec<&str> = Vec::new();
    for r in recoveries {
        if !faults.contains(&r.fault.as_str()) {
            faults.push(&r.fault);
        }
    }
    let stat = |mut values: Vec<Duration>| {
        values.sort();
        let median = values[values.len() / 2];
        let max = values[values.len() - 1];
        format!("{:.1} / {:.1}", median.as_secs_f64(), max.as_secs_f64())
    };
    let mut out = String::from(
        "| fault | n | command accepted | query reflects it | run completed | schedule fired |\n|---|---|---|---|---|---|\n",
    );
    for fault in faults {
        let of: Vec<&Recovery> = recoveries.iter().filter(|r| r.fault == fault).collect();
        out.push_str(&format!(
            "| {fault} | {} | {} | {} | {} | {} |\n",
            of.len(),
            stat(of.iter().map(|r| r.command).collect()),
            stat(of.iter().map(|r| r.query).collect()),
            stat(of.iter().map(|r| r.run).collect()),
            stat(of.iter().map(|r| r.schedule).collect()),
        ));
    }
    out
}

/// The recoveries as a Markdown table (seconds, one decimal).
pub fn table(recoveries: &[Recovery]) -> String {
    let secs = |d: Duration| format!("{:.1}", d.as_secs_f64());
    let mut out = String::from(
        "| fault | round | service ready | command accepted | query reflects it | run completed | schedule fired |\n|---|---|---|---|---|---|---|\n",
    );
    for r in recoveries {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.fault,
            r.round,
            r.ready.map(secs).unwrap_or_else(|| "–".into()),
            secs(r.command),
            secs(r.query),
            secs(r.run),
            secs(r.schedule)
        ));
    }
    out
}

/// Median and maximum of each fail-over (what took over from what) as a Markdown table
/// (seconds from the kill), or a line saying there was none.
pub fn failover_summary(recoveries: &[Recovery]) -> String {
    let mut kinds: Vec<(String, Vec<Duration>)> = Vec::new();
    for r in recoveries {
        for (what, took) in &r.failover {
            let key = format!("{} | {what}", r.fault);
            match kinds.iter_mut().find(|(k, _)| *k == key) {
                Some((_, values)) => values.push(*took),
                None => kinds.push((key, vec![*took])),
            }
        }
    }
    if kinds.is_empty() {
        return "(no fail-over measured)\n".to_owned();
    }
    let mut out = String::from("| fault | taken over | n | seconds |\n|---|---|---|---|\n");
    for (key, mut values) in kinds {
        values.sort();
        out.push_str(&format!(
            "| {key} | {} | {:.2} / {:.2} |\n",
            values.len(),
            values[values.len() / 2].as_secs_f64(),
            values[values.len() - 1].as_secs_f64()
        ));
    }
    out
}
