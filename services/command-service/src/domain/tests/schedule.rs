//! Schedule: create (cron, zone, bounds), update, pause, resume, delete, skip_slot,
//! miss_slots.

use flexcore_contracts::ErrorCode;
use serde_json::json;

use super::*;
use crate::domain::schedule::ScheduleStatus;
use flexcore_contracts::ErrorReason;

fn update(extra: Value) -> Command {
    let mut body = json!({"schedule_id": SCHEDULE});
    if let (Some(b), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(extra.clone());
    }
    cmd("schedule.update", body)
}

fn by_id(action: &str) -> Command {
    cmd(&format!("schedule.{action}"), json!({"schedule_id": SCHEDULE}))
}

fn skip(reason: &str) -> Command {
    cmd(
        "schedule.skip_slot",
        json!({"schedule_id": SCHEDULE, "slot": "2025-01-01T10:00:00Z", "reason": reason}),
    )
}

fn miss(slots: Value) -> Command {
    cmd("schedule.miss_slots", json!({"schedule_id": SCHEDULE, "slots": slots}))
}

/// A `schedule.create` body with `extra`.
fn create_body(extra: Value) -> Value {
    let mut full = json!({"schedule_id": SCHEDULE, "pipeline_id": PIPELINE, "cron": "0 * * * *"});
    full.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    full
}

#[test]
fn create_records_the_spec_with_defaults() {
    let mut world = with_pipeline();
    let (d, data) = then_one(
        world.when(create_schedule(json!({"timezone": "Europe/Berlin"}))),
        SCHEDULE,
        "schedule.created",
    );
    assert_eq!(
        data,
        json!({
            "schedule_id": SCHEDULE, "pipeline_id": PIPELINE, "paused": false,
            "spec": {"cron": "0 * * * *", "timezone": "Europe/Berlin", "overlap": "skip", "catchup_window_seconds": 3600, "catchup_cap": 1, "jitter_seconds": 0}
        })
    );
    world.fold(d.events);
    let s = world.schedule(SCHEDULE);
    assert_eq!(
        (s.status, s.pipeline_id, s.spec.timezone.as_str()),
        (ScheduleStatus::Active, PIPELINE, "Europe/Berlin")
    );
}

#[test]
fn create_accepts_six_fields_bounds_and_a_paused_start_on_a_paused_pipeline() {
    let mut world = with_pipeline().with([cmd("pipeline.pause", json!({"pipeline_id": PIPELINE}))]);
    let c = create_schedule(json!({
        "cron": "30 0 9 * * MON-FRI", "paused": true, "overlap": "buffer_one",
        "start_at": "2025-01-01T00:00:00Z", "end_at": "2026-01-01T00:00:00Z", "catchup_cap": 1000, "jitter_seconds": 86400
    }));
    world.exec(c);
    assert_eq!(world.schedule(SCHEDULE).status, ScheduleStatus::Paused);
}

#[test]
fn create_refuses_duplicates_and_missing_or_archived_pipelines() {
    let e = then_error(with_schedule().when(create_schedule(json!({}))), ErrorCode::Conflict);
    assert!(e.to_string().contains("already exists"), "{e}");
    let e = then_error(with_plugins().when(create_schedule(json!({}))), ErrorCode::NotFound);
    assert!(
        e.to_string().contains(&format!("pipeline {PIPELINE} does not exist")),
        "{e}"
    );
    let archived = with_pipeline().with([cmd("pipeline.archive", json!({"pipeline_id": PIPELINE}))]);
    let e = then_error(archived.when(create_schedule(json!({}))), ErrorCode::InvalidState);
    assert!(e.to_string().contains("archived"), "{e}");
}

#[test]
fn cron_must_have_five_or_six_valid_fields() {
    for cron in [
        "* * * *",
        "0 0 * * * * 2030",
        "@daily",
        "",
        "61 * * * *",
        "* * 32 * *",
        "0 * * * fri-xyz",
        "5-1 * * * *",
        "*/0 * * * *",
    ] {
        assert_eq!(
            refused_by_schema("schedule.create", create_body(json!({"cron": cron}))),
            (ErrorReason::InvalidValue, "/cron".to_owned()),
            "{cron:?}"
        );
    }
}

#[test]
fn timezone_must_be_an_iana_name() {
    assert_eq!(
        refused_by_schema("schedule.create", create_body(json!({"timezone": "Mars/Base"}))),
        (ErrorReason::InvalidValue, "/timezone".to_owned())
    );
    // The calendar's own check agrees, for a spec built in code.
    let mut c = create_schedule(json!({}));
    if let Command::CreateSchedule(create) = &mut c {
        create.timezone = "Mars/Base".into();
    }
    let e = then_error(with_pipeline().when(c), ErrorCode::ValidationFailed);
    assert_eq!(details(&e)["path"], json!("/timezone"));
}

#[test]
fn bounds_caps_and_jitter_are_checked() {
    for (extra, path) in [
        (json!({"catchup_cap": 1001}), "/catchup_cap"),
        (json!({"jitter_seconds": 86401}), "/jitter_seconds"),
        (json!({"start_at": " 2025-02-01T00:00:00Z"}), "/start_at"),
    ] {
        assert_eq!(
            refused_by_schema("schedule.create", create_body(extra.clone())).1,
            path,
            "{extra}"
        );
    }
    // An end at or before the start is a schedule without slots, not an error.
    let empty = json!({"start_at": "2025-02-01T00:00:00Z", "end_at": "2025-01-01T00:00:00Z"});
    then_one(
        with_pipeline().when(create_schedule(empty)),
        SCHEDULE,
        "schedule.created",
    );
}

#[test]
fn update_merges_and_checks_the_whole_spec() {
    let mut world = with_pipeline().with([create_schedule(json!({"start_at": "2025-01-01T00:00:00Z"}))]);
    let (_, data) = then_one(
        world.when(update(json!({"cron": "*/5 * * * *", "jitter_seconds": 30}))),
        SCHEDULE,
        "schedule.updated",
    );
    assert_eq!(data["spec"]["start_at"], json!("2025-01-01T00:00:00Z"));
    world.exec(update(
        json!({"cron": "*/5 * * * *", "jitter_seconds": 30, "overlap": "allow"}),
    ));
    let s = world.schedule(SCHEDULE);
    assert_eq!(
        (s.spec.cron.as_str(), s.spec.jitter_seconds, s.spec.catchup_cap),
        ("*/5 * * * *", 30, 1)
    );
    for extra in [
        json!({"timezone": "Nowhere/Land"}),
        json!({"cron": "nope"}),
        json!({}),
        json!({"cron": null}),
    ] {
        let mut body = json!({"schedule_id": SCHEDULE});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        refused_by_schema("schedule.update", body);
    }
}

#[test]
fn pause_and_resume_toggle() {
    let mut world = with_schedule();
    let e = then_error(world.when(by_id("resume")), ErrorCode::InvalidState);
    assert!(e.to_string().contains("is active, not paused"), "{e}");
    let (_, data) = then_one(
        world.when(cmd(
            "schedule.pause",
            json!({"schedule_id": SCHEDULE, "reason": "holiday"}),
        )),
        SCHEDULE,
        "schedule.paused",
    );
    assert_eq!(data, json!({"reason": "holiday"}));
    world.exec(by_id("pause"));
    assert_eq!(world.schedule(SCHEDULE).status, ScheduleStatus::Paused);
    let e = then_error(world.when(by_id("pause")), ErrorCode::InvalidState);
    assert!(
        e.to_string().ends_with(&format!(
            "schedule {SCHEDULE} is already paused; resume it: `flexctl schedule resume {SCHEDULE}` \
             or POST /api/v1/flexcore/schedules/{SCHEDULE}/resume"
        )),
        "{e}"
    );
    then_one(world.when(by_id("resume")), SCHEDULE, "schedule.resumed");
    world.exec(by_id("resume"));
    assert_eq!(world.schedule(SCHEDULE).status, ScheduleStatus::Active);
}

#[test]
fn delete_is_final() {
    let mut world = with_schedule().with([by_id("pause")]);
    then_one(world.when(by_id("delete")), SCHEDULE, "schedule.deleted");
    world.exec(by_id("delete"));
    assert_eq!(world.schedule(SCHEDULE).status, ScheduleStatus::Deleted);
    for c in [
        by_id("delete"),
        by_id("pause"),
        by_id("resume"),
        update(json!({"cron": "* * * * *"})),
        skip("overlap"),
        miss(json!(["2025-01-01T00:00:00Z"])),
    ] {
        let name = c.name();
        let e = then_error(world.when(c), ErrorCode::InvalidState);
        assert!(e.to_string().contains("deleted"), "{name}: {e}");
    }
}

#[test]
fn skipped_and_missed_slots_are_recorded() {
    let mut world = with_schedule().with([by_id("pause")]);
    let (_, data) = then_one(world.when(skip("pipeline_paused")), SCHEDULE, "schedule.slot_skipped");
    assert_eq!(
        data,
        json!({"slot": "2025-01-01T10:00:00Z", "reason": "pipeline_paused"})
    );
    world.exec(skip("overlap"));
    let slots = json!(["2025-01-01T08:00:00Z", "2025-01-01T09:00:00Z"]);
    let (_, data) = then_one(world.when(miss(slots.clone())), SCHEDULE, "schedule.slots_missed");
    assert_eq!(data, json!({"slots": slots}));
    world.exec(miss(slots));
    let s = world.schedule(SCHEDULE);
    assert_eq!((s.skipped_slots, s.missed_slots), (1, 2));
}

/// A skip and the scheduler's run of one slot take the same unique key, held by different
/// aggregates, so the store commits only one of them however two replicas race; a
/// backfill's run takes none (backfilling a skipped slot is allowed).
#[test]
fn a_skip_and_the_scheduled_run_of_a_slot_exclude_each_other() {
    use crate::domain::schedule::{slot_key, SLOT_SCOPE};
    let world = with_schedule();
    let at: chrono::DateTime<chrono::Utc> = "2025-01-01T10:00:00Z".parse().unwrap();
    let (d, _) = then_one(world.when(skip("overlap")), SCHEDULE, "schedule.slot_skipped");
    let skipped = slot_key(SCHEDULE, at, SCHEDULE);
    assert_eq!(d.constraints.claim_unique, vec![skipped.clone()]);
    let run = flexcore_contracts::ids::scheduled_run_id(SCHEDULE, at);
    let request = |trigger: &str| {
        cmd(
            "run.request",
            json!({"run_id": run, "pipeline_id": PIPELINE, "trigger": trigger, "schedule_id": SCHEDULE, "scheduled_for": at}),
        )
    };
    let (d, _) = then_one(world.when(request("schedule")), run, "run.requested");
    let fired = &d.constraints.claim_unique;
    assert_eq!(fired, &vec![slot_key(SCHEDULE, at, run)]);
    assert_eq!((fired[0].scope.as_str(), &fired[0].key), (SLOT_SCOPE, &skipped.key));
    assert_ne!(fired[0].owner, skipped.owner);
    let (d, _) = then_one(world.when(request("backfill")), run, "run.requested");
    assert!(d.constraints.claim_unique.is_empty());
}

#[test]
fn skip_needs_a_reason_and_miss_needs_slots() {
    let skip = json!({"schedule_id": SCHEDULE, "slot": "2025-01-01T10:00:00Z", "reason": "  "});
    assert_eq!(refused_by_schema("schedule.skip_slot", skip).1, "/reason");
    let miss = json!({"schedule_id": SCHEDULE, "slots": []});
    assert_eq!(refused_by_schema("schedule.miss_slots", miss).1, "/slots");
}

#[test]
fn commands_on_an_unknown_schedule_are_not_found() {
    let world = with_pipeline();
    for c in [
        by_id("pause"),
        by_id("resume"),
        by_id("delete"),
        update(json!({"cron": "* * * * *"})),
        skip("overlap"),
        miss(json!(["2025-01-01T00:00:00Z"])),
    ] {
        let e = then_error(world.when(c), ErrorCode::NotFound);
        assert!(
            e.to_string().contains(&format!("schedule {SCHEDULE} does not exist")),
            "{e}"
        );
    }
}

#[test]
fn a_fired_slot_cannot_be_skipped() {
    let slot: chrono::DateTime<chrono::Utc> = "2025-01-01T10:00:00Z".parse().unwrap();
    let world = with_schedule().with([cmd(
        "run.request",
        json!({"pipeline_id": PIPELINE, "trigger": "schedule", "schedule_id": SCHEDULE, "scheduled_for": slot}),
    )]);
    let e = world.when(skip("overlap")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict, "{e}");
    assert!(e.to_string().contains("was fired"), "{e}");
}
