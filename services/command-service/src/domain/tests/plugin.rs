//! Plugin: register, deprecate, disable, enable.

use flexcore_contracts::events::{PluginEvent, PluginRegistered};
use flexcore_contracts::model::{PluginKind, PluginRuntime};
use flexcore_contracts::ErrorCode;
use serde_json::json;

use super::*;
use crate::domain::plugin::PluginStatus;

fn body(extra: Value) -> Value {
    let mut b = json!({"name": "csv", "version": "1.0.0", "kind": "extractor"});
    if let (Some(b), Some(extra)) = (b.as_object_mut(), extra.as_object()) {
        b.extend(extra.clone());
    }
    b
}

fn register_with(extra: Value) -> Command {
    cmd("plugin.register", body(extra))
}

#[test]
fn register_emits_registered_with_the_derived_id() {
    let id = plugin_id(CSV);
    let (d, _) = then_one(
        World::default().when(register(CSV, "extractor", Some(json!({"type": "object"})))),
        id,
        "plugin.registered",
    );
    let AnyEvent::Plugin(PluginEvent::Registered(e)) = &d.events[0].1 else {
        panic!("not registered")
    };
    assert_eq!(
        *e,
        PluginRegistered {
            plugin_id: id,
            name: "csv".parse().unwrap(),
            version: "1.0.0".parse().unwrap(),
            kind: PluginKind::Extractor,
            runtime: PluginRuntime::Wasm,
            module_digest: Some(digest().parse().unwrap()),
            executable: None,
            config_schema: Some(json!({"type": "object"}).into()),
            limits: Default::default(),
            grants: Default::default(),
            description: None,
        }
    );
    assert_eq!(d.constraints, Default::default());
    let mut world = World::default();
    world.fold(d.events);
    let p = world.plugin(CSV);
    assert_eq!(
        (p.status, p.reference(), p.kind),
        (PluginStatus::Active, CSV.to_owned(), PluginKind::Extractor)
    );
    assert_eq!(world.state(id).version, 1);
}

#[test]
fn register_accepts_a_process_plugin_with_an_absolute_executable_and_limits() {
    let c = register_with(json!({
        "runtime": "process", "executable": "/usr/local/bin/tap-csv",
        "limits": {"memory_bytes": 1048576, "timeout_seconds": 60}
    }));
    let (_, data) = then_one(World::default().when(c), plugin_id(CSV), "plugin.registered");
    assert_eq!(data["runtime"], json!("process"));
    assert_eq!(data["limits"]["timeout_seconds"], json!(60));
}

#[test]
fn registering_the_same_name_and_version_twice_is_a_conflict() {
    let world = with_plugins();
    let e = then_error(world.when(register(CSV, "extractor", None)), ErrorCode::Conflict);
    assert!(e.to_string().contains("plugin csv@1.0.0 is already registered"), "{e}");
    assert_eq!(details(&e)["reason"], json!("exists"));
    // Another version is another plugin.
    then_one(
        world.when(register("csv@1.0.1", "extractor", None)),
        plugin_id("csv@1.0.1"),
        "plugin.registered",
    );
}

#[test]
fn register_checks_the_runtime_fields_by_the_schema() {
    use flexcore_contracts::ErrorReason::{InvalidType, InvalidValue, MissingField};
    let cases = [
        (json!({}), (MissingField, "/module_digest")),
        (
            json!({"module_digest": digest(), "executable": "/bin/x"}),
            (InvalidType, "/executable"),
        ),
        (json!({"runtime": "process"}), (MissingField, "/executable")),
        (
            json!({"runtime": "process", "executable": "bin/tap"}),
            (InvalidValue, "/executable"),
        ),
        (
            json!({"runtime": "process", "executable": "/bin/tap", "module_digest": digest()}),
            (InvalidType, "/module_digest"),
        ),
    ];
    for (extra, (reason, path)) in cases {
        assert_eq!(
            refused_by_schema("plugin.register", body(extra.clone())),
            (reason, path.to_owned()),
            "{extra}"
        );
    }
    // Explicit nulls mean absent.
    let nulls = json!({"module_digest": digest(), "executable": null, "config_schema": null});
    then_one(
        World::default().when(register_with(nulls)),
        plugin_id(CSV),
        "plugin.registered",
    );
}

#[test]
fn register_requires_a_valid_json_schema_object() {
    for schema in [
        json!(true),
        json!("string"),
        json!({"type": 5}),
        json!({"properties": {"a": {"minLength": -1}}}),
    ] {
        let body = body(json!({"module_digest": digest(), "config_schema": schema}));
        assert_eq!(
            refused_by_schema("plugin.register", body).1,
            "/config_schema",
            "{schema}"
        );
    }
    // Valid by the meta-schema, yet unusable: refused by the domain, at the same field.
    let bad_regex = register_with(json!({"module_digest": digest(), "config_schema": {"pattern": "("}}));
    let e = then_error(World::default().when(bad_regex), ErrorCode::ValidationFailed);
    assert!(e.to_string().contains("is not a usable JSON Schema"), "{e}");
    assert_eq!(details(&e)["path"], json!("/config_schema"));
    assert_eq!(details(&e)["reason"], json!("config_schema_unusable"));
}

#[test]
fn register_refuses_zero_limits_by_the_schema() {
    for limit in ["memory_bytes", "fuel", "timeout_seconds", "max_output_bytes"] {
        let body = body(json!({"module_digest": digest(), "limits": {limit: 0}}));
        assert_eq!(
            refused_by_schema("plugin.register", body),
            (
                flexcore_contracts::ErrorReason::InvalidValue,
                format!("/limits/{limit}")
            )
        );
    }
}

fn lifecycle(action: &str) -> Command {
    cmd(&format!("plugin.{action}"), json!({"plugin_id": plugin_id(CSV)}))
}

#[test]
fn deprecate_disable_and_enable_follow_the_lifecycle() {
    let mut world = with_plugins();
    let id = plugin_id(CSV);
    let (_, data) = then_one(
        world.when(cmd("plugin.deprecate", json!({"plugin_id": id, "reason": "use csv@2"}))),
        id,
        "plugin.deprecated",
    );
    assert_eq!(data, json!({"reason": "use csv@2"}));
    world.exec(cmd("plugin.deprecate", json!({"plugin_id": id, "reason": "use csv@2"})));
    assert_eq!(
        (world.plugin(CSV).status, world.plugin(CSV).status_reason.as_deref()),
        (PluginStatus::Deprecated, Some("use csv@2"))
    );
    // deprecated → disabled → enabled (active) → disabled → enabled
    world.exec(lifecycle("disable"));
    assert_eq!(world.plugin(CSV).status, PluginStatus::Disabled);
    then_one(world.when(lifecycle("enable")), id, "plugin.enabled");
    world.exec(lifecycle("enable"));
    assert_eq!(
        (world.plugin(CSV).status, world.plugin(CSV).status_reason.clone()),
        (PluginStatus::Active, None)
    );
    then_one(world.when(lifecycle("disable")), id, "plugin.disabled");
    world.exec(lifecycle("deprecate"));
    then_one(world.when(lifecycle("enable")), id, "plugin.enabled");
    assert_eq!(world.state(id).version, 5);
}

#[test]
fn lifecycle_commands_in_the_wrong_state_name_the_current_state() {
    let active = with_plugins();
    let deprecated = with_plugins().with([lifecycle("deprecate")]);
    let disabled = with_plugins().with([lifecycle("disable")]);
    let cases = [
        (&deprecated, "deprecate", "is deprecated"),
        (&disabled, "deprecate", "is disabled"),
        (&disabled, "disable", "is disabled"),
        (&active, "enable", "is active"),
    ];
    for (world, action, says) in cases {
        let e = then_error(world.when(lifecycle(action)), ErrorCode::InvalidState);
        assert!(
            e.to_string().contains(&format!("plugin csv@1.0.0 {says}")),
            "{action}: {e}"
        );
    }
}

#[test]
fn lifecycle_commands_on_an_unknown_plugin_are_not_found() {
    for action in ["deprecate", "disable", "enable"] {
        let e = then_error(World::default().when(lifecycle(action)), ErrorCode::NotFound);
        assert!(
            e.to_string()
                .contains("does not exist; list the registered ones: `flexctl plugin list`"),
            "{e}"
        );
    }
}
