//! Pipeline creation: steps, plugin references, configs against schemas, secrets, policies.

use flexcore_contracts::ErrorCode;
use serde_json::json;

use super::*;
use crate::domain::pipeline::PipelineStatus;
use crate::domain::plugin::PluginStatus;
use crate::domain::{Constraints, UniqueKey};
use flexcore_contracts::ErrorReason;

fn create(steps: Value) -> Command {
    create_pipeline(PIPELINE, "orders", steps)
}

fn create_with(extra: Value) -> Command {
    let mut body = json!({"pipeline_id": PIPELINE, "name": "orders", "owner": "o", "steps": good_steps()});
    if let (Some(b), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(extra.clone());
    }
    cmd("pipeline.create", body)
}

fn name_key() -> UniqueKey {
    UniqueKey {
        scope: "pipeline_name".into(),
        key: "orders".into(),
        owner: PIPELINE,
    }
}

#[test]
fn create_pins_the_plugins_and_claims_the_name() {
    let world = with_plugins();
    let (d, data) = then_one(world.when(create(good_steps())), PIPELINE, "pipeline.created");
    assert_eq!(
        d.constraints,
        Constraints {
            claim_unique: vec![name_key()],
            ..Constraints::default()
        }
    );
    let steps = &data["definition"]["steps"];
    assert_eq!(steps[0]["plugin_id"], json!(plugin_id(CSV)));
    assert_eq!(steps[0]["kind"], json!("extractor"));
    assert_eq!(steps[1]["kind"], json!("loader"));
    assert_eq!(steps[1]["runtime"], json!("wasm"));
    assert_eq!(steps[1]["module_digest"], json!(digest()));
    assert_eq!(steps[1]["config"]["password"], json!("${secret:DB_PASSWORD}"));
    assert_eq!(data["definition"]["max_active_runs"], json!(1));
    assert_eq!(data["definition"]["retry"]["max_attempts"], json!(3));
    let mut world = world;
    world.fold(d.events);
    let p = world.pipeline(PIPELINE);
    assert_eq!(
        (p.status, p.definition_version, &p.bookmark),
        (PipelineStatus::Active, 1, &flexcore_contracts::OpaqueJson::null())
    );
    assert_eq!(
        (p.name.as_str(), p.owner.as_str(), p.tags.len()),
        ("orders", "data-team", 1)
    );
}

#[test]
fn create_accepts_transformers_in_between_and_deprecated_plugins() {
    let world = with_plugins().with([cmd("plugin.deprecate", json!({"plugin_id": plugin_id(MAP)}))]);
    let steps = json!([{"plugin": CSV}, {"plugin": MAP}, {"plugin": MAP}, {"plugin": JSONL, "config": {"path": "/o"}}]);
    let (_, data) = then_one(world.when(create(steps)), PIPELINE, "pipeline.created");
    assert_eq!(data["definition"]["steps"].as_array().map(Vec::len), Some(4));
}

#[test]
fn creating_an_existing_pipeline_id_is_a_conflict() {
    let e = then_error(
        with_pipeline().when(create_pipeline(PIPELINE, "other", good_steps())),
        ErrorCode::Conflict,
    );
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(details(&e)["reason"], json!("exists"));
}

#[test]
fn steps_must_be_extractor_transformers_loader() {
    let world = with_plugins();
    let loader = || json!({"plugin": JSONL, "config": {"path": "/o"}});
    // Fewer than two steps: the schema's rule.
    for steps in [json!([{"plugin": CSV}]), json!([])] {
        let body = json!({"pipeline_id": PIPELINE, "name": "p", "owner": "o", "steps": steps});
        assert_eq!(
            refused_by_schema("pipeline.create", body),
            (ErrorReason::InvalidValue, "/steps".to_owned())
        );
    }
    let cases = [
        (json!([loader(), {"plugin": CSV}]), 0),
        (json!([{"plugin": CSV}, {"plugin": MAP}]), 1),
        (json!([{"plugin": CSV}, {"plugin": CSV}, loader()]), 1),
        (json!([{"plugin": CSV}, loader(), loader()]), 1),
    ];
    for (steps, i) in cases {
        let e = then_error(world.when(create(steps.clone())), ErrorCode::ValidationFailed);
        assert_eq!(details(&e)["reason"], json!("wrong_plugin_kind"), "{steps}");
        assert_eq!(details(&e)["path"], json!(format!("/steps/{i}/plugin")), "{steps}");
        assert!(e.to_string().contains(&format!("step {i}: plugin")), "{e}");
    }
}

#[test]
fn every_step_plugin_must_be_registered_and_not_disabled() {
    let world = with_plugins();
    let e = then_error(
        world.when(create(
            json!([{"plugin": "nope@9.9.9"}, {"plugin": JSONL, "config": {"path": "/o"}}]),
        )),
        ErrorCode::NotFound,
    );
    assert!(
        e.to_string().contains("step 0: plugin nope@9.9.9 is not registered"),
        "{e}"
    );
    let e = then_error(
        world.when(create(json!([{"plugin": CSV}, {"plugin": "jsonl@2.0.0"}]))),
        ErrorCode::NotFound,
    );
    assert!(
        e.to_string()
            .starts_with("step 1: plugin jsonl@2.0.0 is not registered"),
        "{e}"
    );
    // The refusal points at the step's plugin (a file's line, for flexctl and the console).
    assert_eq!(e.to_error_body().details.path.as_deref(), Some("/steps/1/plugin"));

    let world = world.with([cmd("plugin.disable", json!({"plugin_id": plugin_id(CSV)}))]);
    assert_eq!(world.plugin(CSV).status, PluginStatus::Disabled);
    let e = then_error(world.when(create(good_steps())), ErrorCode::ValidationFailed);
    assert!(e.to_string().contains("step 0: plugin csv@1.0.0 is disabled"), "{e}");
    assert_eq!(details(&e)["reason"], json!("plugin_disabled"));
    assert_eq!(details(&e)["path"], json!("/steps/0/plugin"));
}

#[test]
fn step_configs_are_validated_against_the_plugin_schema() {
    let world = with_plugins();
    let e = then_error(
        world.when(create(json!([{"plugin": CSV}, {"plugin": JSONL, "config": {}}]))),
        ErrorCode::ValidationFailed,
    );
    assert!(
        e.to_string()
            .contains("step 1: config is invalid: \"path\" is a required property"),
        "{e}"
    );
    assert_eq!(details(&e)["reason"], json!("config_invalid"));
    assert_eq!(details(&e)["path"], json!("/steps/1/config"));

    let e = then_error(
        world.when(create(
            json!([{"plugin": CSV}, {"plugin": JSONL, "config": {"path": 7}}]),
        )),
        ErrorCode::ValidationFailed,
    );
    assert!(e.to_string().contains("step 1: config at /path is invalid"), "{e}");
    assert!(e.to_string().contains("jsonl@1.0.0"), "{e}");
    assert_eq!(details(&e)["path"], json!("/steps/1/config/path"));
    assert_eq!(details(&e)["errors"][0]["pointer"], json!("/path"));
}

#[test]
fn an_unknown_config_key_is_refused_at_the_key_itself() {
    let strict = json!({"type": "object", "properties": {"path": {"type": "string"}}, "additionalProperties": false});
    let world = World::default().with([
        register(CSV, "extractor", Some(strict)),
        register(JSONL, "loader", None),
    ]);
    let e = then_error(
        world.when(create(
            json!([{"plugin": CSV, "config": {"path": "/in", "pth": "/x"}}, {"plugin": JSONL}]),
        )),
        ErrorCode::ValidationFailed,
    );
    assert_eq!(details(&e)["path"], json!("/steps/0/config/pth"), "{e}");
    assert_eq!(details(&e)["errors"][0]["pointer"], json!("/pth"));
    assert!(e.to_string().contains("'pth' was unexpected"), "{e}");
}

#[test]
fn a_literal_value_in_a_secret_property_is_refused_without_echoing_it() {
    let world = with_plugins();
    let steps = json!([{"plugin": CSV}, {"plugin": JSONL, "config": {"path": "/o", "password": "hunter2"}}]);
    let e = then_error(world.when(create(steps)), ErrorCode::ValidationFailed);
    assert_eq!(
        e.to_string(),
        "step 1: config.password is a secret: pass it as ${secret:NAME}, not a value"
    );
    assert_eq!(details(&e)["path"], json!("/steps/1/config/password"));
    assert_eq!(details(&e)["reason"], json!("literal_secret"));
    // A reference embedded in a longer string is not one reference.
    let steps = json!([{"plugin": CSV}, {"plugin": JSONL, "config": {"path": "/o", "password": "x${secret:PW}"}}]);
    then_error(world.when(create(steps)), ErrorCode::ValidationFailed);
}

#[test]
fn secret_markers_are_found_in_nested_referenced_and_x_secret_schemas() {
    let schema = json!({
        "type": "object",
        "$defs": {"cred": {"type": "string", "x-secret": true}},
        "properties": {
            "db": {"type": "object", "properties": {"token": {"$ref": "#/$defs/cred"}}},
            "hosts": {"type": "array", "items": {"type": "object", "properties": {"key": {"writeOnly": true}}}}
        }
    });
    let world = with_plugins().with([register("vault@1.0.0", "extractor", Some(schema))]);
    let steps = |config: Value| json!([{"plugin": "vault@1.0.0", "config": config}, {"plugin": JSONL, "config": {"path": "/o"}}]);
    let e = then_error(
        world.when(create(steps(json!({"db": {"token": "abc"}})))),
        ErrorCode::ValidationFailed,
    );
    assert!(e.to_string().starts_with("step 0: config.db.token is a secret"), "{e}");
    let e = then_error(
        world.when(create(steps(json!({"hosts": [{"key": "${secret:K}"}, {"key": 42}]})))),
        ErrorCode::ValidationFailed,
    );
    assert!(
        e.to_string().starts_with("step 0: config.hosts[1].key is a secret"),
        "{e}"
    );
    assert_eq!(details(&e)["path"], json!("/steps/0/config/hosts/1/key"));
    then_one(
        world.when(create(steps(
            json!({"db": {"token": "${secret:T}"}, "hosts": [{"key": "${secret:K}"}]}),
        ))),
        PIPELINE,
        "pipeline.created",
    );
}

#[test]
fn every_secret_reference_must_be_well_formed() {
    let world = with_plugins();
    let extract =
        |config: Value| json!([{"plugin": CSV, "config": config}, {"plugin": JSONL, "config": {"path": "/o"}}]);
    // A malformed reference is a rule of the command's schema (its config string pattern).
    for bad in [
        "${secret:1X}",
        "${secret:}",
        "${secret:A-B}",
        "pre ${secret:OK} and ${secret:no good}",
        "${secret:OPEN",
    ] {
        let body = json!({"pipeline_id": PIPELINE, "name": "p", "owner": "o", "steps": extract(json!({"url": bad}))});
        assert_eq!(
            refused_by_schema("pipeline.create", body),
            (ErrorReason::InvalidValue, "/steps/0/config/url".to_owned()),
            "{bad}"
        );
    }
    let deep = json!({"pipeline_id": PIPELINE, "name": "p", "owner": "o", "steps": extract(json!({"list": ["ok", {"deep": "${secret:9}"}]}))});
    assert_eq!(
        refused_by_schema("pipeline.create", deep).1,
        "/steps/0/config/list/1/deep"
    );
    // The domain's own check says the same of a command built in code.
    let mut c = create(extract(json!({"url": "ok"})));
    if let Command::CreatePipeline(create) = &mut c {
        create.steps[0].config = flexcore_contracts::StepConfig::from_value(&json!({"url": "${secret:1X}"})).unwrap();
    }
    let e = then_error(world.when(c), ErrorCode::ValidationFailed);
    assert!(
        e.to_string()
            .starts_with("step 0: config.url has a malformed secret reference"),
        "{e}"
    );
    // Embedded, repeated and underscore names are fine.
    let ok = json!({"url": "postgres://u:${secret:PW}@db/${secret:_DB2}", "plain": "$ {secret} {secret:x}"});
    then_one(world.when(create(extract(ok))), PIPELINE, "pipeline.created");
}

#[test]
fn secret_references_are_refused_outside_config_values() {
    let world = with_plugins();
    // A key is where a name goes (a stream name in a mapper's config, say): names reach
    // counters, events and read models, so a secret may not be one.
    let keyed = json!([{"plugin": CSV, "config": {"streams": {"${secret:TABLE}": {"keep": ["id"]}}}},
                       {"plugin": JSONL, "config": {"path": "/o"}}]);
    let e = then_error(world.when(create(keyed)), ErrorCode::ValidationFailed);
    assert_eq!(
        e.to_string(),
        "step 0: a key of config.streams holds a secret reference: ${secret:NAME} is only allowed inside string values, not in keys (where names go)"
    );
    assert_eq!(details(&e)["path"], json!("/steps/0/config/streams/${secret:TABLE}"));
    for (field, extra) in [
        ("/owner", json!({"owner": "${secret:OWNER}"})),
        ("/description", json!({"description": "db ${secret:PW}"})),
        ("/tags/1", json!({"tags": ["ok", "${secret:T}"]})),
    ] {
        let e = then_error(world.when(create_with(extra)), ErrorCode::ValidationFailed);
        assert_eq!(details(&e)["path"], json!(field), "{e}");
        assert!(e.to_string().contains("holds a secret reference"), "{e}");
    }
    // The same on update.
    let world = with_pipeline();
    let update = cmd(
        "pipeline.update",
        json!({"pipeline_id": PIPELINE, "description": "${secret:PW}"}),
    );
    let e = then_error(world.when(update), ErrorCode::ValidationFailed);
    assert_eq!(details(&e)["path"], json!("/description"));
    // As a value, embedded or whole, a reference is fine.
    let ok = json!([{"plugin": CSV, "config": {"streams": {"orders": {"password": "x${secret:PW}"}}}},
                    {"plugin": JSONL, "config": {"path": "/o"}}]);
    let other = Uuid::from_u128(0x0101);
    then_one(
        world.when(create_pipeline(other, "other", ok)),
        other,
        "pipeline.created",
    );
}

#[test]
fn policies_and_tags_are_bounded_by_the_schema() {
    let world = with_plugins();
    let many: Vec<String> = (0..51).map(|i| format!("t{i}")).collect();
    let cases = [
        (json!({"max_active_runs": 0}), "/max_active_runs"),
        (json!({"max_active_runs": 1001}), "/max_active_runs"),
        (json!({"retry": {"max_attempts": 0}}), "/retry/max_attempts"),
        (json!({"retry": {"max_attempts": 101}}), "/retry/max_attempts"),
        (
            json!({"retry": {"initial_backoff_seconds": 0}}),
            "/retry/initial_backoff_seconds",
        ),
        (json!({"retry": {"multiplier": 0.5}}), "/retry/multiplier"),
        (json!({"run_timeout_seconds": 0}), "/run_timeout_seconds"),
        (json!({"tags": many}), "/tags"),
        (json!({"tags": ["a", "b", "a"]}), "/tags"),
        (json!({"retry": [2, 5, 60, 1.5]}), "/retry"),
    ];
    for (extra, path) in cases {
        let mut body = json!({"pipeline_id": PIPELINE, "name": "p", "owner": "o", "steps": good_steps()});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (_, at) = refused_by_schema("pipeline.create", body);
        assert_eq!(at, path, "{extra}");
    }
    // An initial back-off above the maximum is capped by it, not refused.
    let capped = json!({"retry": {"initial_backoff_seconds": 700, "max_backoff_seconds": 600}});
    then_one(world.when(create_with(capped)), PIPELINE, "pipeline.created");
    let edge = json!({"max_active_runs": 1000, "retry": {"max_attempts": 100, "initial_backoff_seconds": 5, "max_backoff_seconds": 5, "multiplier": 1.0}});
    then_one(world.when(create_with(edge)), PIPELINE, "pipeline.created");
}
