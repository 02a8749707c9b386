//! The aggregate-independent API: types, storage round trips, the fold, ids, error bodies.

use flexcore_contracts::events::{PipelineEvent, PipelineResumed, PluginEnabled, SCHEMA_VERSION};
use flexcore_contracts::ErrorCode;
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::domain::{addressed, AggregateType};

#[test]
fn aggregate_types_round_trip_through_their_names() {
    for kind in [
        AggregateType::Plugin,
        AggregateType::Pipeline,
        AggregateType::Run,
        AggregateType::Schedule,
    ] {
        assert_eq!(kind.as_str().parse::<AggregateType>(), Ok(kind));
        assert_eq!(kind.to_string(), kind.as_str());
    }
    // Aggregate types come only from the log: an unknown one is a damaged log.
    let e = "widget".parse::<AggregateType>().unwrap_err();
    assert_eq!(e.code(), ErrorCode::Internal);
    assert!(
        e.to_string().contains("expected plugin, pipeline, run or schedule"),
        "{e}"
    );
}

#[test]
fn every_decided_event_survives_the_storage_form_and_refolds_to_the_same_state() {
    // A history touching every aggregate and most event types.
    let mut world = with_running();
    let mut log = Vec::new();
    for c in [
        cmd(
            "run.checkpoint",
            json!({"run_id": RUN, "attempt": 1, "state": {"b": 1}}),
        ),
        fail(1, true),
        cmd("run.retry", json!({"run_id": RUN, "failed_attempt": 1})),
        cmd("pipeline.pause", json!({"pipeline_id": PIPELINE})),
        create_schedule(json!({})),
        cmd(
            "schedule.miss_slots",
            json!({"schedule_id": SCHEDULE, "slots": ["2025-01-01T00:00:00Z"]}),
        ),
        cmd("plugin.deprecate", json!({"plugin_id": plugin_id(MAP)})),
    ] {
        log.extend(world.exec(c).events);
    }
    for (agg, event) in &log {
        let back = AnyEvent::from_stored(agg.kind.as_str(), event.event_type(), SCHEMA_VERSION, &event.data()).unwrap();
        assert_eq!(&back, event);
        assert_eq!(back.aggregate_type(), agg.kind);
    }
    // Replaying the whole history from scratch gives the same states.
    let mut replay = with_running();
    replay.fold(log);
    assert_eq!(replay.all, world.all);
}

#[test]
fn unreadable_stored_events_are_corrupt() {
    let corrupt = |r: Result<AnyEvent, DomainError>| matches!(r, Err(DomainError::Corrupt(_)));
    let stored = |v: Value| flexcore_contracts::OpaqueJson::from_value(&v);
    assert!(corrupt(AnyEvent::from_stored(
        "widget",
        "widget.made",
        1,
        &stored(json!({}))
    )));
    assert!(corrupt(AnyEvent::from_stored(
        "pipeline",
        "pipeline.exploded",
        1,
        &stored(json!({}))
    )));
    assert!(corrupt(AnyEvent::from_stored(
        "pipeline",
        "pipeline.created",
        1,
        &stored(json!({"nope": 1}))
    )));
    assert!(corrupt(AnyEvent::from_stored(
        "pipeline",
        "pipeline.resumed",
        SCHEMA_VERSION + 1,
        &stored(json!({}))
    )));
    let e = DomainError::Corrupt("x".into()).to_error_body();
    assert_eq!(e.code, ErrorCode::Internal);
}

#[test]
fn folding_refuses_events_that_cannot_belong_there() {
    let resumed = AnyEvent::Pipeline(PipelineEvent::Resumed(PipelineResumed {}));
    // A first event that does not create.
    assert!(matches!(
        AggregateState::evolve(None, &resumed),
        Err(DomainError::Corrupt(_))
    ));
    // An event of another aggregate type.
    let world = with_pipeline();
    let pipeline = world.state(PIPELINE).state.clone();
    let enabled = AnyEvent::from(PluginEnabled {});
    let e = AggregateState::evolve(Some(pipeline.clone()), &enabled).unwrap_err();
    assert!(matches!(e, DomainError::Corrupt(_)));
    assert!(
        e.to_string()
            .contains("plugin event plugin.enabled cannot be applied to a pipeline"),
        "{e}"
    );
    // A creating event on an existing aggregate.
    let created = with_plugins()
        .when(create_pipeline(PIPELINE, "orders", good_steps()))
        .unwrap()
        .events
        .remove(0)
        .1;
    assert!(matches!(
        AggregateState::evolve(Some(pipeline), &created),
        Err(DomainError::Corrupt(_))
    ));
}

#[test]
fn loaded_states_are_found_by_id_and_type() {
    let world = with_pipeline();
    let pipeline = world.all.get::<crate::domain::Pipeline>(PIPELINE);
    assert_eq!(pipeline.map(|p| p.id), Some(PIPELINE));
    assert_eq!(world.all.pipeline(PIPELINE), pipeline);
    // The same id asked for as another aggregate type is not there.
    assert!(world.all.get::<crate::domain::Run>(PIPELINE).is_none());
    assert!(world.all.run(PIPELINE).is_none());
    assert!(world.all.get::<crate::domain::Pipeline>(RUN).is_none());
}

#[test]
fn target_fills_missing_ids_once_and_derives_plugin_ids() {
    let mut c = cmd(
        "pipeline.create",
        json!({"name": "p", "owner": "o", "steps": good_steps()}),
    );
    assert_eq!(addressed(&c), None);
    let first = target(&mut c);
    assert_eq!(first.kind, AggregateType::Pipeline);
    assert_eq!(first.id.get_version_num(), 7);
    assert_eq!(target(&mut c), first, "a filled id is kept");
    assert_eq!(addressed(&c), Some(first));

    for (mut c, kind) in [
        (cmd("run.request", json!({"pipeline_id": PIPELINE})), AggregateType::Run),
        (
            cmd("schedule.create", json!({"pipeline_id": PIPELINE, "cron": "* * * * *"})),
            AggregateType::Schedule,
        ),
    ] {
        let t = target(&mut c);
        assert_eq!((t.kind, t.id.get_version_num()), (kind, 7));
    }
    let mut c = register(CSV, "extractor", None);
    assert_eq!(
        target(&mut c),
        AggRef::plugin(flexcore_contracts::ids::plugin_id("csv", "1.0.0"))
    );
    let mut c = cmd("run.cancel", json!({"run_id": RUN}));
    assert_eq!(target(&mut c), AggRef::run(RUN));
}

#[test]
fn deciding_a_creating_command_without_its_id_is_refused() {
    let c = cmd("schedule.create", json!({"pipeline_id": PIPELINE, "cron": "* * * * *"}));
    assert!(required(&c, &Loaded::default()).is_empty());
    // The service assigns the id before deciding: without one it is a bug, not bad input.
    then_error(decide(&c, &Loaded::default()), ErrorCode::Internal);
}

#[test]
fn required_grows_with_what_is_loaded() {
    let world = with_pipeline();
    let c = request_run(RUN);
    assert_eq!(
        required(&c, &Loaded::default()),
        vec![AggRef::run(RUN), AggRef::pipeline(PIPELINE)]
    );
    let mut loaded = Loaded::default();
    loaded.states.insert(PIPELINE, world.state(PIPELINE).clone());
    assert_eq!(
        required(&c, &loaded),
        vec![
            AggRef::run(RUN),
            AggRef::pipeline(PIPELINE),
            AggRef::plugin(plugin_id(CSV)),
            AggRef::plugin(plugin_id(JSONL))
        ]
    );
    // A pipeline using the same plugin twice names it once.
    let steps = json!([{"plugin": CSV}, {"plugin": MAP}, {"plugin": MAP}, {"plugin": JSONL, "config": {"path": "/o"}}]);
    let c = create_pipeline(Uuid::from_u128(9), "twice", steps);
    assert_eq!(required(&c, &Loaded::default()).len(), 4);
}

#[test]
fn error_bodies_carry_code_message_and_details() {
    use flexcore_contracts::ErrorReason;
    let cases = [
        (
            DomainError::validation(ErrorReason::ConfigInvalid, "/steps/1/config", "bad").with("errors", 2),
            ErrorCode::ValidationFailed,
            ErrorReason::ConfigInvalid,
            Some("/steps/1/config"),
        ),
        (
            DomainError::NotFound("gone".into()),
            ErrorCode::NotFound,
            ErrorReason::NotFound,
            None,
        ),
        (
            DomainError::conflict(ErrorReason::Exists, "taken").with("run_id", "x"),
            ErrorCode::Conflict,
            ErrorReason::Exists,
            None,
        ),
        (
            DomainError::InvalidState("no".into()),
            ErrorCode::InvalidState,
            ErrorReason::InvalidState,
            None,
        ),
        (
            DomainError::Corrupt("broken".into()),
            ErrorCode::Internal,
            ErrorReason::Internal,
            None,
        ),
    ];
    for (e, code, reason, path) in cases {
        let body = e.to_error_body();
        assert_eq!(body.code, code);
        assert_eq!(body.code, reason.code(), "{e}: the reason belongs to the code");
        assert_eq!(body.details.reason, reason);
        assert_eq!(body.details.path.as_deref(), path);
        assert_eq!(body.message, e.to_string());
    }
    let conflict = DomainError::conflict(ErrorReason::Exists, "taken").with("run_id", "x");
    assert_eq!(conflict.to_error_body().details.extra["run_id"], "x");
}

#[test]
fn given_stored_events_when_a_command_then_its_events() {
    // Given: the log as the store holds it (type + data), not built through commands.
    let stored = |agg: AggRef, event_type: &str, data: Value| {
        (
            agg,
            AnyEvent::from_stored(agg.kind.as_str(), event_type, SCHEMA_VERSION, &data.into()).unwrap(),
        )
    };
    let plugin = |reference: &str, kind: &str| {
        let (name, version) = reference.split_once('@').unwrap();
        let data = json!({"plugin_id": plugin_id(reference), "name": name, "version": version, "kind": kind, "runtime": "wasm", "module_digest": digest()});
        stored(AggRef::plugin(plugin_id(reference)), "plugin.registered", data)
    };
    let step = |reference: &str, kind: &str| json!({"plugin": reference, "plugin_id": plugin_id(reference), "kind": kind, "runtime": "wasm", "module_digest": digest(), "config": {}});
    let definition = json!({
        "steps": [step(CSV, "extractor"), step(JSONL, "loader")],
        "max_active_runs": 2, "retry": {"max_attempts": 1, "initial_backoff_seconds": 1, "max_backoff_seconds": 1, "multiplier": 1.0},
        "run_timeout_seconds": 60
    });
    let world = World::given([
        plugin(CSV, "extractor"),
        plugin(JSONL, "loader"),
        stored(
            AggRef::pipeline(PIPELINE),
            "pipeline.created",
            json!({"pipeline_id": PIPELINE, "name": "orders", "owner": "o", "definition": definition}),
        ),
        stored(
            AggRef::pipeline(PIPELINE),
            "pipeline.state_committed",
            json!({"state": {"cursor": 3}}),
        ),
    ]);
    assert_eq!(world.state(PIPELINE).version, 2);
    // When / then.
    let (d, data) = then_one(world.when(request_run(RUN)), RUN, "run.requested");
    assert_eq!(
        (data["definition_version"].clone(), data["attempt"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(d.constraints.acquire_slot.map(|s| s.max), Some(2));
    let mut world = world;
    world.fold(d.events);
    let (_, data) = then_one(world.when(claim(1)), RUN, "run.claimed");
    assert_eq!(data["resume_state"], json!({"cursor": 3}));
    world.exec(claim(1));
    // One attempt allowed: even a retryable failure is final.
    let (_, data) = then_one(world.when(fail(1, true)), RUN, "run.failed");
    assert_eq!(data["final"], json!(true));
}
