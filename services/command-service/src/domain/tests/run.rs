//! Run: request, claim, checkpoint, succeed, fail, retry, cancel, time_out; attempts as
//! fencing tokens; terminal states.

use flexcore_contracts::events::{RunEvent, RunRequested};
use flexcore_contracts::model::{RunTrigger, TimeoutReason};
use flexcore_contracts::ErrorCode;
use serde_json::json;

use super::*;
use crate::domain::run::RunStatus;
use crate::domain::{Constraints, SlotClaim};

fn slot(max: u32) -> SlotClaim {
    SlotClaim {
        pool: PIPELINE,
        holder: RUN,
        max,
    }
}

fn released() -> Constraints {
    Constraints {
        release_slot: Some(slot(1)),
        ..Constraints::default()
    }
}

fn checkpoint(attempt: u32, state: Value) -> Command {
    cmd(
        "run.checkpoint",
        json!({"run_id": RUN, "attempt": attempt, "state": state, "counters": {"orders": 10}}),
    )
}

fn succeed(attempt: u32) -> Command {
    cmd(
        "run.succeed",
        json!({"run_id": RUN, "attempt": attempt, "counters": {"orders": 12}}),
    )
}

fn retry(failed_attempt: u32) -> Command {
    cmd("run.retry", json!({"run_id": RUN, "failed_attempt": failed_attempt}))
}

fn cancel() -> Command {
    cmd("run.cancel", json!({"run_id": RUN, "reason": "not needed"}))
}

fn time_out(attempt: u32, reason: &str) -> Command {
    cmd(
        "run.time_out",
        json!({"run_id": RUN, "attempt": attempt, "reason": reason}),
    )
}

/// A pipeline allowing `max_attempts`, with `RUN` claimed.
fn running_with_attempts(max_attempts: u32) -> World {
    with_plugins().with([
        cmd("pipeline.create", json!({"pipeline_id": PIPELINE, "name": "orders", "owner": "o", "steps": good_steps(), "retry": {"max_attempts": max_attempts}})),
        request_run(RUN),
        claim(1),
    ])
}

#[test]
fn request_pins_the_definition_and_takes_a_slot() {
    let world = with_schedule().with([cmd(
        "pipeline.update",
        json!({"pipeline_id": PIPELINE, "max_active_runs": 3}),
    )]);
    let at = "2025-03-01T10:00:00Z".parse().unwrap();
    let run = flexcore_contracts::ids::scheduled_run_id(SCHEDULE, at);
    // No run_id: the service derives it from the slot.
    let mut c = cmd(
        "run.request",
        json!({"pipeline_id": PIPELINE, "trigger": "schedule", "schedule_id": SCHEDULE, "scheduled_for": at}),
    );
    assert_eq!(crate::domain::target(&mut c), AggRef::run(run));
    let (d, _) = then_one(world.when(c), run, "run.requested");
    let p = world.pipeline(PIPELINE);
    let AnyEvent::Run(RunEvent::Requested(e)) = &d.events[0].1 else {
        panic!("not requested")
    };
    assert_eq!(
        *e,
        RunRequested {
            run_id: run,
            pipeline_id: PIPELINE,
            pipeline_name: p.name.clone(),
            definition_version: 2,
            definition: p.definition.clone(),
            trigger: RunTrigger::Schedule,
            schedule_id: Some(SCHEDULE),
            scheduled_for: Some("2025-03-01T10:00:00Z".parse().unwrap()),
            attempt: 1,
        }
    );
    assert_eq!(
        d.constraints,
        Constraints {
            acquire_slot: Some(SlotClaim { holder: run, ..slot(3) }),
            claim_unique: vec![crate::domain::schedule::slot_key(SCHEDULE, at, run)],
            ..Constraints::default()
        }
    );
    let mut world = world;
    world.fold(d.events);
    let r = world.run(run);
    assert_eq!(
        (r.status, r.attempt, r.runner_id.clone()),
        (RunStatus::Requested, 1, None)
    );
}

#[test]
fn request_refuses_duplicates_missing_paused_archived_and_disabled() {
    let e = then_error(with_run().when(request_run(RUN)), ErrorCode::Conflict);
    assert!(e.to_string().contains(&format!("run {RUN} already exists")), "{e}");
    let e = then_error(with_plugins().when(request_run(RUN)), ErrorCode::NotFound);
    assert!(
        e.to_string().contains(&format!("pipeline {PIPELINE} does not exist")),
        "{e}"
    );
    let paused = with_pipeline().with([cmd("pipeline.pause", json!({"pipeline_id": PIPELINE}))]);
    let e = then_error(paused.when(request_run(RUN)), ErrorCode::InvalidState);
    assert!(e.to_string().contains("is paused"), "{e}");
    let archived = with_pipeline().with([cmd("pipeline.archive", json!({"pipeline_id": PIPELINE}))]);
    let e = then_error(archived.when(request_run(RUN)), ErrorCode::InvalidState);
    assert!(e.to_string().contains("is archived"), "{e}");
    let disabled = with_pipeline().with([cmd("plugin.disable", json!({"plugin_id": plugin_id(JSONL)}))]);
    let e = then_error(disabled.when(request_run(RUN)), ErrorCode::InvalidState);
    assert!(
        e.to_string()
            .contains("step 1: plugin jsonl@1.0.0 of pipeline orders is disabled"),
        "{e}"
    );
}

#[test]
fn claim_starts_the_attempt_from_the_pipeline_bookmark() {
    let world = with_run().with([cmd(
        "pipeline.commit_state",
        json!({"pipeline_id": PIPELINE, "state": {"cursor": 7}}),
    )]);
    let (d, data) = then_one(world.when(claim(1)), RUN, "run.claimed");
    assert_eq!(
        data,
        json!({"attempt": 1, "runner_id": "runner-a", "lease_seconds": 30, "resume_state": {"cursor": 7}})
    );
    let mut world = world;
    world.fold(d.events);
    let r = world.run(RUN);
    assert_eq!(
        (
            r.status,
            r.runner_id.as_ref().map(|l| l.as_str()),
            r.resume_state.to_value()
        ),
        (RunStatus::Running, Some("runner-a"), json!({"cursor": 7}))
    );
}

#[test]
fn claim_refuses_running_runs_and_zero_leases() {
    let e = then_error(with_running().when(claim(1)), ErrorCode::InvalidState);
    assert!(
        e.to_string()
            .contains("is running (attempt 1): only runs that are requested can be claimed"),
        "{e}"
    );
    let zero = json!({"run_id": RUN, "attempt": 1, "runner_id": "r", "lease_seconds": 0});
    assert_eq!(refused_by_schema("run.claim", zero).1, "/lease_seconds");
    then_error(with_pipeline().when(claim(1)), ErrorCode::NotFound);
}

#[test]
fn checkpoint_commits_the_state_to_the_run_and_the_pipeline() {
    let mut world = with_running();
    let d = world.when(checkpoint(1, json!({"cursor": 9}))).unwrap();
    assert_eq!(
        types(&d),
        vec![(RUN, "run.checkpointed"), (PIPELINE, "pipeline.state_committed")]
    );
    assert_eq!(
        d.events[1].1.data().to_value(),
        json!({"state": {"cursor": 9}, "run_id": RUN})
    );
    assert_eq!(d.constraints, Constraints::default());
    let pipeline_version = world.state(PIPELINE).version;
    world.fold(d.events);
    assert_eq!(world.pipeline(PIPELINE).bookmark.to_value(), json!({"cursor": 9}));
    assert_eq!(world.state(PIPELINE).version, pipeline_version + 1);
    let r = world.run(RUN);
    assert_eq!(
        (r.last_state.to_value(), r.counters.get("orders")),
        (json!({"cursor": 9}), Some(&10))
    );
    then_error(with_run().when(checkpoint(1, json!({}))), ErrorCode::InvalidState);
}

#[test]
fn succeed_is_final_and_releases_the_slot() {
    let mut world = with_running();
    let d = world.exec(succeed(1));
    assert_eq!(types(&d), vec![(RUN, "run.succeeded")]);
    assert_eq!(d.constraints, released());
    let r = world.run(RUN);
    assert_eq!(
        (r.status, r.counters.get("orders"), r.runner_id.clone()),
        (RunStatus::Succeeded, Some(&12), None)
    );
    then_error(with_run().when(succeed(1)), ErrorCode::InvalidState);
}

#[test]
fn a_retryable_failure_awaits_a_retry_and_keeps_the_slot() {
    let mut world = with_running();
    let (d, data) = then_one(world.when(fail(1, true)), RUN, "run.failed");
    assert_eq!(
        (data["final"].clone(), data["retryable"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(d.constraints, Constraints::default());
    world.fold(d.events);
    let r = world.run(RUN);
    assert_eq!(
        (r.status, r.last_error.as_ref().map(|e| e.code.as_str())),
        (RunStatus::AwaitingRetry, Some("plugin_trap"))
    );
}

#[test]
fn a_failure_is_final_when_not_retryable_or_on_the_last_attempt() {
    let (d, data) = then_one(with_running().when(fail(1, false)), RUN, "run.failed");
    assert_eq!((data["final"].clone(), d.constraints), (json!(true), released()));
    let mut last = running_with_attempts(1);
    let (d, data) = then_one(last.when(fail(1, true)), RUN, "run.failed");
    assert_eq!(
        (data["final"].clone(), d.constraints.clone()),
        (json!(true), released())
    );
    last.fold(d.events);
    assert_eq!(last.run(RUN).status, RunStatus::Failed);
    // Attempt 2 of 2 is the last one too.
    let world = running_with_attempts(2).with([fail(1, true), retry(1), claim(2)]);
    let (_, data) = then_one(world.when(fail(2, true)), RUN, "run.failed");
    assert_eq!(data["final"], json!(true));
}

#[test]
fn retry_starts_the_next_attempt() {
    let mut world = with_running().with([fail(1, true)]);
    let (_, data) = then_one(world.when(retry(1)), RUN, "run.retried");
    assert_eq!(data, json!({"attempt": 2, "pipeline_id": PIPELINE}));
    world.exec(retry(1));
    let r = world.run(RUN);
    assert_eq!((r.status, r.attempt), (RunStatus::Requested, 2));
    // The same retry again is stale now.
    let e = then_error(world.when(retry(1)), ErrorCode::Conflict);
    assert_eq!(details(&e), json!({"reason": "stale_attempt", "current_attempt": 2}));
    world.exec(claim(2));
    let e = then_error(world.when(retry(2)), ErrorCode::InvalidState);
    assert!(
        e.to_string()
            .contains("only runs that are awaiting_retry can be retried"),
        "{e}"
    );
}

#[test]
fn every_attempt_carrying_command_from_a_stale_attempt_is_a_conflict() {
    // Attempt 1 lost its lease; attempt 2 is running elsewhere.
    let world = with_running().with([time_out(1, "lease_expired"), retry(1), claim(2)]);
    for c in [
        claim(1),
        checkpoint(1, json!({})),
        succeed(1),
        fail(1, true),
        time_out(1, "lease_expired"),
        retry(1),
    ] {
        let name = c.name();
        let e = then_error(world.when(c), ErrorCode::Conflict);
        assert_eq!(
            details(&e),
            json!({"reason": "stale_attempt", "current_attempt": 2}),
            "{name}"
        );
        assert!(e.to_string().contains("attempt 1 of run"), "{name}: {e}");
    }
    // A future attempt is just as wrong.
    then_error(world.when(succeed(3)), ErrorCode::Conflict);
}

#[test]
fn cancel_stops_any_live_run_and_releases_the_slot() {
    let awaiting = with_running().with([fail(1, true)]);
    for world in [with_run(), with_running(), awaiting] {
        let mut world = world;
        let (d, data) = then_one(world.when(cancel()), RUN, "run.cancelled");
        assert_eq!(
            (data, d.constraints.clone()),
            (json!({"attempt": 1, "reason": "not needed"}), released())
        );
        world.fold(d.events);
        assert_eq!(world.run(RUN).status, RunStatus::Cancelled);
    }
    then_error(with_pipeline().when(cancel()), ErrorCode::NotFound);
}

#[test]
fn a_lost_lease_is_retried_until_attempts_run_out() {
    let mut world = with_running();
    let (d, data) = then_one(world.when(time_out(1, "lease_expired")), RUN, "run.timed_out");
    assert_eq!(
        (data, d.constraints.clone()),
        (
            json!({"attempt": 1, "reason": "lease_expired", "final": false}),
            Constraints::default()
        )
    );
    world.fold(d.events);
    assert_eq!(
        (world.run(RUN).status, world.run(RUN).timeout_reason),
        (RunStatus::AwaitingRetry, Some(TimeoutReason::LeaseExpired))
    );
    // Only a running attempt can lose a lease.
    let e = then_error(world.when(time_out(1, "lease_expired")), ErrorCode::InvalidState);
    assert!(e.to_string().contains("is awaiting_retry"), "{e}");
    then_error(with_run().when(time_out(1, "lease_expired")), ErrorCode::InvalidState);
    // On the last attempt it is final.
    let (d, data) = then_one(
        running_with_attempts(1).when(time_out(1, "lease_expired")),
        RUN,
        "run.timed_out",
    );
    assert_eq!((data["final"].clone(), d.constraints), (json!(true), released()));
}

#[test]
fn a_run_timeout_is_final_from_any_live_state() {
    let awaiting = with_running().with([fail(1, true)]);
    for world in [with_run(), with_running(), awaiting] {
        let mut world = world;
        let (d, data) = then_one(world.when(time_out(1, "run_timeout")), RUN, "run.timed_out");
        assert_eq!(
            (data["final"].clone(), d.constraints.clone()),
            (json!(true), released())
        );
        world.fold(d.events);
        assert_eq!(world.run(RUN).status, RunStatus::TimedOut);
    }
}

#[test]
fn terminal_runs_refuse_everything() {
    let ends = [
        (with_running().with([succeed(1)]), "succeeded"),
        (with_running().with([fail(1, false)]), "failed"),
        (with_run().with([cancel()]), "cancelled"),
        (with_run().with([time_out(1, "run_timeout")]), "timed_out"),
    ];
    for (world, status) in ends {
        for c in [
            claim(1),
            checkpoint(1, json!({})),
            succeed(1),
            fail(1, true),
            retry(1),
            cancel(),
            time_out(1, "run_timeout"),
            time_out(1, "lease_expired"),
        ] {
            let name = c.name();
            let e = then_error(world.when(c), ErrorCode::InvalidState);
            assert!(
                e.to_string().contains(&format!("run {RUN} is already {status}")),
                "{name}: {e}"
            );
        }
    }
}

#[test]
fn a_full_run_folds_to_the_expected_state() {
    let mut world = running_with_attempts(3);
    for c in [
        checkpoint(1, json!({"c": 1})),
        fail(1, true),
        retry(1),
        claim(2),
        checkpoint(2, json!({"c": 2})),
        succeed(2),
    ] {
        world.exec(c);
    }
    let r = world.run(RUN);
    assert_eq!(
        (r.status, r.attempt, r.last_state.to_value(), r.resume_state.to_value()),
        (RunStatus::Succeeded, 2, json!({"c": 2}), json!({"c": 1}))
    );
    assert_eq!(r.last_error.as_ref().map(|e| e.message.as_str()), Some("boom"));
    // requested, claimed, checkpointed, failed, retried, claimed, checkpointed, succeeded
    assert_eq!(world.state(RUN).version, 8);
    assert_eq!(world.pipeline(PIPELINE).bookmark.to_value(), json!({"c": 2}));
}

#[test]
fn scheduled_runs_name_an_existing_schedule_of_their_pipeline_and_use_the_slot_id() {
    let world = with_schedule();
    let request = |body: Value| cmd("run.request", body);
    let slot = "2025-03-01T10:00:00Z";
    // Half a slot reference: the schema's rule.
    let half = json!({"run_id": RUN, "pipeline_id": PIPELINE, "trigger": "schedule", "schedule_id": SCHEDULE});
    assert_eq!(refused_by_schema("run.request", half).1, "/scheduled_for");
    let manual = json!({"run_id": RUN, "pipeline_id": PIPELINE, "scheduled_for": slot});
    assert_eq!(refused_by_schema("run.request", manual).1, "/schedule_id");
    // Another id than the slot's.
    let e = world
        .when(request(json!({"run_id": RUN, "pipeline_id": PIPELINE, "trigger": "backfill", "schedule_id": SCHEDULE, "scheduled_for": slot})))
        .unwrap_err();
    assert!(e.to_string().contains("omit run_id"), "{e}");
    assert_eq!(details(&e)["reason"], json!("mismatch"));
    assert_eq!(details(&e)["path"], json!("/run_id"));
    // An unknown schedule.
    let other = Uuid::from_u128(0x0399);
    let derived = flexcore_contracts::ids::scheduled_run_id(other, slot.parse().unwrap());
    let e = world
        .when(request(json!({"run_id": derived, "pipeline_id": PIPELINE, "trigger": "schedule", "schedule_id": other, "scheduled_for": slot})))
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
}
