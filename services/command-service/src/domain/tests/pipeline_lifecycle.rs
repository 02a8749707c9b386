//! Pipeline after creation: update, pause, resume, archive, commit_state.

use flexcore_contracts::ErrorCode;
use serde_json::json;

use super::*;
use crate::domain::pipeline::PipelineStatus;
use crate::domain::{Constraints, UniqueKey};

fn name_key() -> UniqueKey {
    UniqueKey {
        scope: "pipeline_name".into(),
        key: "orders".into(),
        owner: PIPELINE,
    }
}

fn update(extra: Value) -> Command {
    let mut body = json!({"pipeline_id": PIPELINE});
    if let (Some(b), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(extra.clone());
    }
    cmd("pipeline.update", body)
}

#[test]
fn update_of_metadata_keeps_the_definition_version() {
    let mut world = with_pipeline();
    let (_, data) = then_one(
        world.when(update(json!({"owner": "ops", "tags": ["a", "b"]}))),
        PIPELINE,
        "pipeline.updated",
    );
    assert_eq!(data["definition_version"], json!(1));
    world.exec(update(
        json!({"owner": "ops", "tags": ["a", "b"], "description": "nightly"}),
    ));
    let p = world.pipeline(PIPELINE);
    assert_eq!(
        (
            p.owner.as_str(),
            p.tags.len(),
            p.description.as_deref(),
            p.definition_version
        ),
        ("ops", 2, Some("nightly"), 1)
    );
    // Giving the current policy again is not a change either.
    world.exec(update(json!({"max_active_runs": 1})));
    assert_eq!(world.pipeline(PIPELINE).definition_version, 1);
}

#[test]
fn update_of_the_definition_bumps_its_version() {
    let mut world = with_pipeline();
    let (_, data) = then_one(
        world.when(update(json!({"max_active_runs": 4}))),
        PIPELINE,
        "pipeline.updated",
    );
    assert_eq!(
        (data["definition_version"].clone(), data["owner"].clone()),
        (json!(2), json!("data-team"))
    );
    world.exec(update(json!({"max_active_runs": 4})));
    let steps = json!([{"plugin": CSV}, {"plugin": MAP}, {"plugin": JSONL, "config": {"path": "/new"}}]);
    world.exec(update(json!({"steps": steps, "retry": {"max_attempts": 5}})));
    let p = world.pipeline(PIPELINE);
    assert_eq!(
        (
            p.definition_version,
            p.definition.steps.len(),
            p.definition.max_active_runs
        ),
        (3, 3, 4)
    );
    assert_eq!((p.definition.retry.max_attempts, p.tags.len()), (5, 1));
}

#[test]
fn update_refuses_nothing_invalid_archived_and_unknown() {
    let world = with_pipeline();
    // Changing nothing (nulls included), bad policies, repeated tags: the schema's rules.
    for extra in [
        json!({}),
        json!({"owner": null}),
        json!({"retry": {"multiplier": 0.1}}),
        json!({"tags": ["x", "x"]}),
    ] {
        let mut body = json!({"pipeline_id": PIPELINE});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        refused_by_schema("pipeline.update", body);
    }
    then_error(
        world.when(update(
            json!({"steps": [{"plugin": JSONL, "config": {"path": "/o"}}, {"plugin": CSV}]}),
        )),
        ErrorCode::ValidationFailed,
    );
    then_error(
        world.when(update(json!({"steps": [{"plugin": CSV}, {"plugin": "gone@1.0.0"}]}))),
        ErrorCode::NotFound,
    );
    let archived = with_pipeline().with([cmd("pipeline.archive", json!({"pipeline_id": PIPELINE}))]);
    let e = then_error(archived.when(update(json!({"owner": "x"}))), ErrorCode::InvalidState);
    assert!(e.to_string().contains("pipeline orders is archived"), "{e}");
    then_error(with_plugins().when(update(json!({"owner": "x"}))), ErrorCode::NotFound);
}

#[test]
fn metadata_updates_survive_a_plugin_disabled_since() {
    let world = with_pipeline().with([cmd("plugin.disable", json!({"plugin_id": plugin_id(CSV)}))]);
    then_one(
        world.when(update(json!({"owner": "ops"}))),
        PIPELINE,
        "pipeline.updated",
    );
    then_error(
        world.when(update(json!({"steps": good_steps()}))),
        ErrorCode::ValidationFailed,
    );
}

fn by_id(action: &str) -> Command {
    cmd(&format!("pipeline.{action}"), json!({"pipeline_id": PIPELINE}))
}

#[test]
fn pause_and_resume_toggle_between_active_and_paused() {
    let mut world = with_pipeline();
    let e = then_error(world.when(by_id("resume")), ErrorCode::InvalidState);
    assert!(e.to_string().contains("is active, not paused"), "{e}");
    let (_, data) = then_one(
        world.when(cmd(
            "pipeline.pause",
            json!({"pipeline_id": PIPELINE, "reason": "db down"}),
        )),
        PIPELINE,
        "pipeline.paused",
    );
    assert_eq!(data, json!({"reason": "db down"}));
    world.exec(by_id("pause"));
    assert_eq!(world.pipeline(PIPELINE).status, PipelineStatus::Paused);
    let e = then_error(world.when(by_id("pause")), ErrorCode::InvalidState);
    assert!(
        e.to_string()
            .contains("is already paused; resume it: `flexctl pipeline resume "),
        "{e}"
    );
    assert!(
        e.to_string()
            .ends_with(&format!("or POST /api/v1/flexcore/pipelines/{PIPELINE}/resume")),
        "{e}"
    );
    world.exec(by_id("resume"));
    assert_eq!(world.pipeline(PIPELINE).status, PipelineStatus::Active);
}

#[test]
fn archive_is_final_and_releases_the_name() {
    let mut world = with_pipeline().with([by_id("pause")]);
    let d = world.exec(by_id("archive"));
    assert_eq!(types(&d), vec![(PIPELINE, "pipeline.archived")]);
    assert_eq!(
        d.constraints,
        Constraints {
            release_unique: vec![name_key()],
            ..Constraints::default()
        }
    );
    assert_eq!(world.pipeline(PIPELINE).status, PipelineStatus::Archived);
    for action in ["archive", "pause", "resume"] {
        let e = then_error(world.when(by_id(action)), ErrorCode::InvalidState);
        assert!(e.to_string().contains("archived"), "{action}: {e}");
    }
}

#[test]
fn commit_state_sets_the_bookmark_unless_archived() {
    let mut world = with_pipeline();
    let commit = |state: Value| {
        cmd(
            "pipeline.commit_state",
            json!({"pipeline_id": PIPELINE, "state": state}),
        )
    };
    let (_, data) = then_one(
        world.when(commit(json!({"bookmarks": {"orders": 42}}))),
        PIPELINE,
        "pipeline.state_committed",
    );
    assert_eq!(data, json!({"state": {"bookmarks": {"orders": 42}}}));
    world.exec(commit(json!({"bookmarks": {"orders": 42}})));
    assert_eq!(
        world.pipeline(PIPELINE).bookmark.to_value(),
        json!({"bookmarks": {"orders": 42}})
    );
    world.exec(commit(Value::Null));
    assert!(world.pipeline(PIPELINE).bookmark.is_null());
    then_error(with_plugins().when(commit(Value::Null)), ErrorCode::NotFound);
    let archived = world.with([by_id("archive")]);
    then_error(archived.when(commit(Value::Null)), ErrorCode::InvalidState);
}

#[test]
fn lifecycle_commands_on_an_unknown_pipeline_are_not_found() {
    for action in ["pause", "resume", "archive"] {
        let e = then_error(with_plugins().when(by_id(action)), ErrorCode::NotFound);
        assert!(
            e.to_string().contains(&format!("pipeline {PIPELINE} does not exist")),
            "{e}"
        );
    }
}
