//! The core's decisions on hand-made event sequences.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};

use super::*;

const SCHEDULE: Uuid = Uuid::from_u128(0x51);
const PIPELINE: Uuid = Uuid::from_u128(0x52);
const RUN: Uuid = Uuid::from_u128(0x53);

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn core() -> Core {
    let tuning = Tuning {
        takeover_grace: Duration::seconds(2),
        recheck_after: Duration::seconds(10),
        max_catchup_slots: 10_000,
    };
    Core::new(tuning, Members::new("me".into(), std::time::Duration::from_secs(3)))
}

fn event(core: &mut Core, aggregate: &str, id: Uuid, event_type: &str, data: Value, at: DateTime<Utc>) {
    traced(core, aggregate, id, event_type, data, at, None);
}

/// [`event`] written under the trace `traceparent`.
fn traced(
    core: &mut Core,
    aggregate: &str,
    id: Uuid,
    event_type: &str,
    data: Value,
    at: DateTime<Utc>,
    traceparent: Option<&str>,
) {
    core.apply(&envelope(aggregate, id, event_type, data, at, traceparent))
        .unwrap();
}

fn envelope(
    aggregate: &str,
    id: Uuid,
    event_type: &str,
    data: Value,
    at: DateTime<Utc>,
    traceparent: Option<&str>,
) -> EventEnvelope {
    EventEnvelope {
        event_id: Uuid::new_v4(),
        event_type: event_type.into(),
        aggregate_type: aggregate.into(),
        aggregate_id: id,
        version: 1,
        global_position: 1,
        schema_version: 1,
        recorded_at: at,
        data: data.into(),
        metadata: flexcore_contracts::envelope::EventMetadata {
            traceparent: traceparent.map(str::to_owned),
            correlation_id: Some(format!("corr-{id}")),
            ..Default::default()
        },
    }
}

fn schedule(core: &mut Core, spec: Value, at: DateTime<Utc>) {
    let mut full = json!({"cron": "* * * * *", "timezone": "UTC", "overlap": "skip", "catchup_window_seconds": 3600, "catchup_cap": 1, "jitter_seconds": 0});
    full.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
    let created = json!({"pipeline_id": PIPELINE, "name": "orders", "owner": "team", "tags": [],
           "definition": {"steps": [], "max_active_runs": 5, "run_timeout_seconds": 3600,
                          "retry": {"max_attempts": 3, "initial_backoff_seconds": 10, "max_backoff_seconds": 600, "multiplier": 2.0}}});
    event(core, "pipeline", PIPELINE, "pipeline.created", created, at);
    event(
        core,
        "schedule",
        SCHEDULE,
        "schedule.created",
        json!({"schedule_id": SCHEDULE, "pipeline_id": PIPELINE, "spec": full, "paused": false}),
        at,
    );
}

fn request(core: &mut Core, run: Uuid, at: DateTime<Utc>) {
    requested(core, run, json!({"trigger": "manual"}), at);
}

fn requested(core: &mut Core, run: Uuid, trigger: Value, at: DateTime<Utc>) {
    let mut data = json!({"run_id": run, "pipeline_id": PIPELINE, "pipeline_name": "orders", "definition_version": 1,
           "definition": {"steps": [], "max_active_runs": 5, "run_timeout_seconds": 3600,
                          "retry": {"max_attempts": 3, "initial_backoff_seconds": 10, "max_backoff_seconds": 600, "multiplier": 2.0}},
           "attempt": 1});
    data.as_object_mut()
        .unwrap()
        .extend(trigger.as_object().unwrap().clone());
    event(core, "run", run, "run.requested", data, at);
}

fn fired(actions: &[Action]) -> Vec<DateTime<Utc>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Fire { slot, .. } => Some(*slot),
            _ => None,
        })
        .collect()
}

#[test]
fn nothing_is_armed_before_the_log_is_replayed_then_the_next_slot_is() {
    let mut c = core();
    schedule(&mut c, json!({}), t("2026-11-24T10:00:30Z"));
    assert_eq!(c.next_deadline(), None);
    c.go_live(t("2026-11-24T10:00:31Z"));
    assert_eq!(c.next_deadline(), Some(t("2026-11-24T10:01:00Z")));
    assert!(c.due(t("2026-11-24T10:00:59Z")).is_empty());
    let actions = c.due(t("2026-11-24T10:01:00Z"));
    assert_eq!(fired(&actions), [t("2026-11-24T10:01:00Z")]);
    assert_eq!(c.next_deadline(), Some(t("2026-11-24T10:02:00Z")));
}

#[test]
fn after_downtime_the_latest_cap_slots_fire_and_older_ones_are_missed() {
    let mut c = core();
    schedule(
        &mut c,
        json!({"overlap": "allow", "catchup_cap": 3}),
        t("2026-11-24T10:00:30Z"),
    );
    // Down until 10:10:30: slots 10:01 … 10:10 (ten) are due at once.
    c.go_live(t("2026-11-24T10:10:30Z"));
    let actions = c.due(t("2026-11-24T10:10:30Z"));
    let missed: Vec<DateTime<Utc>> = actions
        .iter()
        .flat_map(|a| match a {
            Action::Miss { slots, .. } => slots.clone(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(missed.len(), 7);
    assert_eq!(missed[0], t("2026-11-24T10:01:00Z"));
    assert_eq!(
        fired(&actions),
        [
            t("2026-11-24T10:08:00Z"),
            t("2026-11-24T10:09:00Z"),
            t("2026-11-24T10:10:00Z")
        ]
    );
}

#[test]
fn slots_older_than_the_window_are_missed_even_under_the_cap() {
    let mut c = core();
    schedule(
        &mut c,
        json!({"overlap": "allow", "catchup_cap": 100, "catchup_window_seconds": 120}),
        t("2026-11-24T10:00:30Z"),
    );
    c.go_live(t("2026-11-24T10:10:30Z"));
    let actions = c.due(t("2026-11-24T10:10:30Z"));
    // Window 120 s plus the 2 s grace: 10:09 and 10:10 fire.
    assert_eq!(fired(&actions), [t("2026-11-24T10:09:00Z"), t("2026-11-24T10:10:00Z")]);
}

#[test]
fn skip_policy_records_the_slot_while_a_run_is_active() {
    let mut c = core();
    schedule(&mut c, json!({}), t("2026-11-24T10:00:30Z"));
    request(&mut c, RUN, t("2026-11-24T10:00:40Z"));
    c.go_live(t("2026-11-24T10:00:41Z"));
    let actions = c.due(t("2026-11-24T10:01:00Z"));
    assert_eq!(
        actions,
        [Action::Skip {
            schedule_id: SCHEDULE,
            slot: t("2026-11-24T10:01:00Z"),
            reason: "overlap"
        }]
    );
}

#[test]
fn buffer_one_keeps_one_slot_until_the_pipeline_is_idle() {
    let mut c = core();
    schedule(&mut c, json!({"overlap": "buffer_one"}), t("2026-11-24T10:00:30Z"));
    request(&mut c, RUN, t("2026-11-24T10:00:40Z"));
    c.go_live(t("2026-11-24T10:00:41Z"));
    assert!(c.due(t("2026-11-24T10:01:00Z")).is_empty(), "10:01 is buffered");
    let second = c.due(t("2026-11-24T10:02:00Z"));
    assert!(
        matches!(second[..], [Action::Skip { reason: "overlap", .. }]),
        "{second:?}"
    );
    event(
        &mut c,
        "run",
        RUN,
        "run.cancelled",
        json!({"attempt": 1}),
        t("2026-11-24T10:02:10Z"),
    );
    let actions = c.due(t("2026-11-24T10:02:10Z"));
    assert_eq!(fired(&actions), [t("2026-11-24T10:01:00Z")]);
}

#[test]
fn a_retry_continues_the_trace_of_the_failure_and_a_time_out_that_of_the_claim() {
    const CLAIMED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const FAILED: &str = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";
    let mut c = core();
    c.go_live(t("2026-11-24T10:00:00Z"));
    request(&mut c, RUN, t("2026-11-24T10:00:00Z"));
    let claim = json!({"attempt": 1, "runner_id": "r1", "lease_seconds": 30, "resume_state": null});
    traced(
        &mut c,
        "run",
        RUN,
        "run.claimed",
        claim,
        t("2026-11-24T10:00:01Z"),
        Some(CLAIMED),
    );
    // The lease lapses: the time-out continues the claim's trace.
    let lapsed = c.due(t("2026-11-24T10:01:00Z"));
    assert!(
        matches!(
            lapsed.as_slice(),
            [Action::TimeOut {
                reason: TimeoutReason::LeaseExpired,
                ..
            }]
        ),
        "{lapsed:?}"
    );
    assert_eq!(lapsed[0].traceparent(), Some(CLAIMED));

    // A retryable failure: the retry continues the failure's trace.
    let failure = json!({"attempt": 1, "error": {"code": "x", "message": "y"}, "retryable": true, "final": false, "counters": {}});
    traced(
        &mut c,
        "run",
        RUN,
        "run.failed",
        failure,
        t("2026-11-24T10:00:05Z"),
        Some(FAILED),
    );
    let due = c.next_deadline().unwrap();
    let retried = c.due(due);
    assert!(
        matches!(retried.as_slice(), [Action::Retry { failed_attempt: 1, .. }]),
        "{retried:?}"
    );
    assert_eq!(retried[0].traceparent(), Some(FAILED));
    // Slots fired by the calendar start traces of their own.
    assert_eq!(
        Action::Fire {
            schedule_id: SCHEDULE,
            pipeline_id: PIPELINE,
            slot: due
        }
        .traceparent(),
        None
    );
}

#[test]
fn a_failed_attempt_is_retried_after_its_back_off_and_a_final_one_never() {
    let mut c = core();
    c.go_live(t("2026-11-24T10:00:00Z"));
    request(&mut c, RUN, t("2026-11-24T10:00:00Z"));
    event(
        &mut c,
        "run",
        RUN,
        "run.claimed",
        json!({"attempt": 1, "runner_id": "r1", "lease_seconds": 30, "resume_state": null}),
        t("2026-11-24T10:00:01Z"),
    );
    let failed_at = t("2026-11-24T10:00:05Z");
    event(
        &mut c,
        "run",
        RUN,
        "run.failed",
        json!({"attempt": 1, "error": {"code": "x", "message": "y"}, "retryable": true, "final": false, "counters": {}}),
        failed_at,
    );
    let backoff = RetryPolicy {
        max_attempts: 3,
        initial_backoff_seconds: 10,
        max_backoff_seconds: 600,
        multiplier: 2.0,
    }
    .backoff(1, RUN);
    let due_at = failed_at + Duration::from_std(backoff).unwrap();
    assert_eq!(c.next_deadline(), Some(due_at));
    assert!(c.due(due_at - Duration::milliseconds(1)).is_empty());
    assert_eq!(
        c.due(due_at),
        [Action::Retry {
            run_id: RUN,
            failed_attempt: 1,
            traceparent: None,
            // The run's request's correlation id: the retry's events share it.
            correlation_id: Some(format!("corr-{RUN}")),
        }]
    );
    // Acting does not repeat at once; the re-check comes later.
    assert!(c.due(due_at + Duration::seconds(1)).is_empty());
    event(
        &mut c,
        "run",
        RUN,
        "run.retried",
        json!({"attempt": 2, "pipeline_id": PIPELINE}),
        due_at,
    );
    event(
        &mut c,
        "run",
        RUN,
        "run.claimed",
        json!({"attempt": 2, "runner_id": "r1", "lease_seconds": 30, "resume_state": null}),
        due_at,
    );
    event(
        &mut c,
        "run",
        RUN,
        "run.failed",
        json!({"attempt": 2, "error": {"code": "x", "message": "y"}, "retryable": false, "final": true, "counters": {}}),
        due_at,
    );
    assert_eq!(c.counts().1, 0, "a finally failed run is forgotten");
}

#[test]
fn heartbeats_hold_the_lease_and_silence_times_the_attempt_out() {
    let mut c = core();
    c.go_live(t("2026-11-24T10:00:00Z"));
    request(&mut c, RUN, t("2026-11-24T10:00:00Z"));
    event(
        &mut c,
        "run",
        RUN,
        "run.claimed",
        json!({"attempt": 1, "runner_id": "r1", "lease_seconds": 10, "resume_state": null}),
        t("2026-11-24T10:00:00Z"),
    );
    c.heartbeat(RUN, 1, t("2026-11-24T10:00:08Z"));
    c.heartbeat(RUN, 7, t("2026-11-24T10:00:30Z")); // another attempt's: ignored
    assert!(c.due(t("2026-11-24T10:00:17Z")).is_empty());
    assert_eq!(
        c.due(t("2026-11-24T10:00:18Z")),
        [Action::TimeOut {
            run_id: RUN,
            attempt: 1,
            reason: TimeoutReason::LeaseExpired,
            traceparent: None,
            correlation_id: Some(format!("corr-{RUN}")),
        }]
    );
}

#[test]
fn a_connection_outage_longer_than_the_lease_does_not_time_attempts_out() {
    let mut c = core();
    c.go_live(t("2026-11-24T10:00:00Z"));
    request(&mut c, RUN, t("2026-11-24T10:00:00Z"));
    event(
        &mut c,
        "run",
        RUN,
        "run.claimed",
        json!({"attempt": 1, "runner_id": "r1", "lease_seconds": 10, "resume_state": null}),
        t("2026-11-24T10:00:00Z"),
    );
    // NATS was down from 10:00:01 to 10:00:40: no heartbeat could arrive.
    c.heartbeats_missed(t("2026-11-24T10:00:40Z"));
    assert!(c.due(t("2026-11-24T10:00:49Z")).is_empty());
    c.heartbeat(RUN, 1, t("2026-11-24T10:00:45Z"));
    assert!(c.due(t("2026-11-24T10:00:54Z")).is_empty());
    assert!(matches!(
        c.due(t("2026-11-24T10:00:55Z"))[..],
        [Action::TimeOut {
            reason: TimeoutReason::LeaseExpired,
            ..
        }]
    ));
}

#[test]
fn a_run_past_its_timeout_is_timed_out_for_good() {
    let mut c = core();
    c.go_live(t("2026-11-24T10:00:00Z"));
    request(&mut c, RUN, t("2026-11-24T10:00:00Z"));
    assert_eq!(c.next_deadline(), Some(t("2026-11-24T11:00:00Z")));
    assert!(matches!(
        c.due(t("2026-11-24T11:00:00Z"))[..],
        [Action::TimeOut {
            reason: TimeoutReason::RunTimeout,
            ..
        }]
    ));
}

#[test]
fn a_replica_that_does_not_own_a_key_waits_the_grace_and_then_only_if_nothing_happened() {
    let mut c = core();
    let now = std::time::Instant::now();
    // Add peers until one of them owns the schedule.
    let mut n = 0;
    while c.members().owns(SCHEDULE) {
        c.heard(&format!("peer-{n}"), true, now);
        n += 1;
    }
    schedule(&mut c, json!({}), t("2026-11-24T10:00:30Z"));
    c.go_live(t("2026-11-24T10:00:31Z"));
    assert_eq!(c.next_deadline(), Some(t("2026-11-24T10:01:02Z")));
    // The owner fired in time: the run appears and nothing is left to do.
    let slot = t("2026-11-24T10:01:00Z");
    requested(
        &mut c,
        scheduled_run_id(SCHEDULE, slot),
        json!({"trigger": "schedule", "schedule_id": SCHEDULE, "scheduled_for": slot}),
        slot,
    );
    assert!(c.due(t("2026-11-24T10:01:02Z")).is_empty());
    // Its next deadline is the next slot plus the grace.
    assert_eq!(c.next_deadline(), Some(t("2026-11-24T10:02:02Z")));
}

#[test]
fn a_paused_schedule_fires_nothing_and_resuming_does_not_catch_up() {
    let mut c = core();
    schedule(&mut c, json!({"catchup_cap": 100}), t("2026-11-24T10:00:30Z"));
    c.go_live(t("2026-11-24T10:00:31Z"));
    event(
        &mut c,
        "schedule",
        SCHEDULE,
        "schedule.paused",
        json!({}),
        t("2026-11-24T10:00:40Z"),
    );
    assert_eq!(c.next_deadline(), None);
    assert!(c.due(t("2026-11-24T10:05:00Z")).is_empty());
    event(
        &mut c,
        "schedule",
        SCHEDULE,
        "schedule.resumed",
        json!({}),
        t("2026-11-24T10:05:10Z"),
    );
    // 10:01 … 10:05 passed while paused: not fired, not recorded; 10:06 is next.
    assert_eq!(c.next_deadline(), Some(t("2026-11-24T10:06:00Z")));
    assert_eq!(fired(&c.due(t("2026-11-24T10:06:00Z"))), [t("2026-11-24T10:06:00Z")]);
}

#[test]
fn a_changed_cron_does_not_re_run_the_last_slot() {
    let mut c = core();
    schedule(&mut c, json!({}), t("2026-11-24T10:00:30Z"));
    c.go_live(t("2026-11-24T10:00:31Z"));
    let spec = json!({"cron": "*/10 * * * *", "timezone": "UTC", "overlap": "skip", "catchup_window_seconds": 3600, "catchup_cap": 1, "jitter_seconds": 0});
    event(
        &mut c,
        "schedule",
        SCHEDULE,
        "schedule.updated",
        json!({"spec": spec}),
        t("2026-11-24T10:03:00Z"),
    );
    assert_eq!(c.next_deadline(), Some(t("2026-11-24T10:10:00Z")));
}

#[test]
fn allow_fires_and_a_full_pool_turns_the_slot_into_a_recorded_skip() {
    let mut c = core();
    schedule(&mut c, json!({"overlap": "allow"}), t("2026-11-24T10:00:30Z"));
    request(&mut c, RUN, t("2026-11-24T10:00:40Z"));
    c.go_live(t("2026-11-24T10:00:41Z"));
    let actions = c.due(t("2026-11-24T10:01:00Z"));
    assert_eq!(
        fired(&actions),
        [t("2026-11-24T10:01:00Z")],
        "allow fires despite the active run"
    );
    let follow_up = c.outcome(&actions[0], &Outcome::PoolFull, t("2026-11-24T10:01:00Z"));
    assert_eq!(
        follow_up,
        [Action::Skip {
            schedule_id: SCHEDULE,
            slot: t("2026-11-24T10:01:00Z"),
            reason: "max_active_runs"
        }]
    );
}

#[test]
fn an_undelivered_fire_is_tried_again() {
    let mut c = core();
    schedule(&mut c, json!({"overlap": "allow"}), t("2026-11-24T10:00:30Z"));
    c.go_live(t("2026-11-24T10:00:31Z"));
    let actions = c.due(t("2026-11-24T10:01:00Z"));
    assert!(c
        .outcome(
            &actions[0],
            &Outcome::Failed("no responders".into()),
            t("2026-11-24T10:01:00Z")
        )
        .is_empty());
    assert_eq!(fired(&c.due(t("2026-11-24T10:01:01Z"))), [t("2026-11-24T10:01:00Z")]);
}

#[test]
fn an_undecodable_event_is_an_error_that_changes_nothing_and_other_aggregates_are_not_read() {
    let mut c = core();
    schedule(&mut c, json!({}), t("2026-11-24T10:00:30Z"));
    c.go_live(t("2026-11-24T10:00:31Z"));
    let before = (c.counts(), c.next_deadline());
    let at = t("2026-11-24T10:00:40Z");
    for (aggregate, id, event_type, data, schema_version) in [
        ("schedule", SCHEDULE, "schedule.exploded", json!({}), 1),
        ("schedule", SCHEDULE, "schedule.updated", json!({"spec": "hourly"}), 1),
        ("pipeline", PIPELINE, "pipeline.paused", json!({}), 2),
        ("run", RUN, "run.requested", json!({"run_id": RUN}), 1),
    ] {
        let mut e = envelope(aggregate, id, event_type, data, at, None);
        e.schema_version = schema_version;
        e.global_position = 42;
        let error = c.apply(&e).unwrap_err();
        assert_eq!((error.global_position, error.aggregate_id), (42, id));
        assert!(error.to_string().contains(event_type), "{error}");
    }
    // Nothing was folded: the schedule still fires at the next minute, its pipeline active.
    assert_eq!((c.counts(), c.next_deadline()), before);
    assert_eq!(fired(&c.due(t("2026-11-24T10:01:00Z"))), [t("2026-11-24T10:01:00Z")]);
    // Plugin events, and those of an aggregate type the scheduler does not keep, are not
    // its to decode.
    let plugin = envelope("plugin", Uuid::nil(), "plugin.exploded", json!({}), at, None);
    let widget = envelope("widget", Uuid::nil(), "widget.made", json!({}), at, None);
    assert!(c.apply(&plugin).is_ok() && c.apply(&widget).is_ok());
}

/// The events of a schedule with a buffered slot, a run claimed and failed: everything a
/// state carries.
fn busy_log() -> Vec<EventEnvelope> {
    let mut c = core();
    let mut log = Vec::new();
    let mut record = |c: &mut Core, aggregate: &str, id: Uuid, event_type: &str, data: Value, at: &str| {
        let e = envelope(
            aggregate,
            id,
            event_type,
            data,
            t(at),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        c.apply(&e).unwrap();
        log.push(e);
    };
    let spec = json!({"cron": "* * * * *", "timezone": "UTC", "overlap": "buffer_one", "catchup_window_seconds": 3600, "catchup_cap": 1, "jitter_seconds": 0});
    let definition = json!({"steps": [], "max_active_runs": 5, "run_timeout_seconds": 3600,
        "retry": {"max_attempts": 3, "initial_backoff_seconds": 10, "max_backoff_seconds": 600, "multiplier": 2.0}});
    record(
        &mut c,
        "pipeline",
        PIPELINE,
        "pipeline.created",
        json!({"pipeline_id": PIPELINE, "name": "orders", "owner": "team", "tags": [], "definition": definition}),
        "2026-11-24T10:00:30Z",
    );
    record(
        &mut c,
        "schedule",
        SCHEDULE,
        "schedule.created",
        json!({"schedule_id": SCHEDULE, "pipeline_id": PIPELINE, "spec": spec, "paused": false}),
        "2026-11-24T10:00:30Z",
    );
    record(
        &mut c,
        "run",
        RUN,
        "run.requested",
        json!({"run_id": RUN, "pipeline_id": PIPELINE, "pipeline_name": "orders", "definition_version": 1,
               "definition": definition, "attempt": 1, "trigger": "manual"}),
        "2026-11-24T10:00:40Z",
    );
    record(
        &mut c,
        "run",
        RUN,
        "run.claimed",
        json!({"attempt": 1, "runner_id": "r1", "lease_seconds": 30, "resume_state": null}),
        "2026-11-24T10:00:41Z",
    );
    record(
        &mut c,
        "schedule",
        SCHEDULE,
        "schedule.slot_skipped",
        json!({"slot": "2026-11-24T10:01:00Z", "reason": "overlap"}),
        "2026-11-24T10:01:00Z",
    );
    record(
        &mut c,
        "run",
        RUN,
        "run.failed",
        json!({"attempt": 1, "error": {"code": "x", "message": "y"}, "retryable": true, "final": false, "counters": {}}),
        "2026-11-24T10:01:05Z",
    );
    log
}

#[test]
fn a_state_holds_what_the_log_says_and_nothing_a_live_replica_decided() {
    let log = busy_log();
    let mut replayed = core();
    let mut live = core();
    live.go_live(t("2026-11-24T10:00:00Z"));
    for e in &log {
        replayed.apply(e).unwrap();
        live.apply(e).unwrap();
    }
    // The live replica acts: it retries the run, buffers 10:02 (the run is not finished),
    // moves its cursor and hears a heartbeat; none of it is in the log.
    live.heartbeat(RUN, 1, t("2026-11-24T10:01:30Z"));
    let acted = live.due(t("2026-11-24T10:02:00Z"));
    assert!(
        matches!(acted[..], [Action::Retry { run_id: RUN, .. }]),
        "a retry, and 10:02 waits in the buffer: {acted:?}"
    );
    assert_eq!(live.state(), replayed.state());
    let state = replayed.state();
    assert_eq!(state.schedules[0].cursor, t("2026-11-24T10:01:00Z"), "{state:?}");
    assert_eq!(state.runs[0].status, RunStatus::AwaitingRetry, "{state:?}");
    assert_eq!(state.pipelines[0].active, [RUN]);
}

#[test]
fn a_restored_core_fed_the_rest_of_the_log_acts_as_one_that_replayed_it_all() {
    let log = busy_log();
    for cut in 0..=log.len() {
        let mut whole = core();
        let mut first = core();
        for e in &log {
            whole.apply(e).unwrap();
        }
        for e in &log[..cut] {
            first.apply(e).unwrap();
        }
        // The state goes through its wire form, as a snapshot does.
        let wire = serde_json::to_vec(&first.state()).unwrap();
        let mut restored = Core::restore(
            core().tuning,
            Members::new("me".into(), std::time::Duration::from_secs(3)),
            serde_json::from_slice(&wire).unwrap(),
        );
        for e in &log[cut..] {
            restored.apply(e).unwrap();
        }
        assert_eq!(restored.state(), whole.state(), "cut after {cut} events");
        let now = t("2026-11-24T10:01:10Z");
        whole.go_live(now);
        restored.go_live(now);
        assert_eq!(
            restored.next_deadline(),
            whole.next_deadline(),
            "cut after {cut} events"
        );
        for at in ["2026-11-24T10:01:15Z", "2026-11-24T10:02:00Z", "2026-11-24T10:05:00Z"] {
            assert_eq!(restored.due(t(at)), whole.due(t(at)), "cut after {cut} events, at {at}");
        }
        assert_eq!(restored.counts(), whole.counts());
    }
}
