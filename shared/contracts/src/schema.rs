//! JSON Schema generation for every contract type. `schemas/` holds the generated files;
//! the `schemas_up_to_date` test fails when they drift from the types, and
//! `FLEXCORE_UPDATE_SCHEMAS=1 cargo test -p flexcore-contracts` rewrites them.
//!
//! Every schema states every rule the services enforce on it (see [`crate::rules`]): the
//! types' own attributes say ranges, lengths and patterns, and [`standardise`] completes
//! what the derive leaves out, in standard 2020-12 keywords only: integers get their exact
//! bounds (never above 2^53 − 1) instead of the non-standard `format: uint32`, UUIDs and
//! timestamps get patterns (`format` alone is only an annotation in 2020-12), and every
//! other string and object key is refused U+0000.

use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value};

use crate::commands::{Command, CommandMeta};
use crate::rules::{MAX_SAFE_INTEGER, TEXT_PATTERN, TIMESTAMP_PATTERN, UUID_PATTERN};

/// The schema of `T`, standardised.
pub fn schema_for<T: JsonSchema>() -> Schema {
    SchemaSettings::draft2020_12()
        .with_transform(RecursiveTransform(standardise))
        .into_generator()
        .into_root_schema_for::<T>()
}

/// Completes one schema node with the rules its type implies (see the module docs).
pub fn standardise(schema: &mut Schema) {
    let Some(node) = schema.as_object_mut() else { return };
    split_integer_union(node);
    let format = node.get("format").and_then(Value::as_str).map(str::to_owned);
    if has_type(node, "integer") {
        let (min, max): (i128, i128) = match format.as_deref() {
            Some("uint8") => (0, i128::from(u8::MAX)),
            Some("uint16") => (0, i128::from(u16::MAX)),
            Some("uint32") => (0, i128::from(u32::MAX)),
            Some("int8") => (i128::from(i8::MIN), i128::from(i8::MAX)),
            Some("int16") => (i128::from(i16::MIN), i128::from(i16::MAX)),
            Some("int32") => (i128::from(i32::MIN), i128::from(i32::MAX)),
            Some("int64" | "int") => (-i128::from(MAX_SAFE_INTEGER), i128::from(MAX_SAFE_INTEGER)),
            _ => (0, i128::from(MAX_SAFE_INTEGER)),
        };
        node.entry("minimum").or_insert_with(|| bound(min));
        node.entry("maximum").or_insert_with(|| bound(max));
    }
    if let Some(f) = &format {
        if f.starts_with("uint") || f.starts_with("int") || f == "double" || f == "float" {
            node.remove("format");
        }
    }
    let constrained = ["pattern", "enum", "const"].iter().any(|k| node.contains_key(*k));
    if has_type(node, "string") && !constrained {
        let pattern = match format.as_deref() {
            Some("uuid") => UUID_PATTERN,
            Some("date-time") => TIMESTAMP_PATTERN,
            _ => TEXT_PATTERN,
        };
        node.insert("pattern".into(), pattern.into());
    }
    let is_map = node.get("additionalProperties").is_some_and(Value::is_object);
    if is_map && !node.contains_key("propertyNames") {
        let mut names = Map::new();
        names.insert("pattern".into(), TEXT_PATTERN.into());
        node.insert("propertyNames".into(), Value::Object(names));
    }
}

/// `"type": ["integer", "null"]` becomes `"anyOf": [{"type": "integer", …}, {"type": "null"}]`
/// with the numeric keywords in the integer branch. Equivalent, but some validators (the
/// `jsonschema` crate among them) do not count `1.0` as an integer inside a type union.
fn split_integer_union(node: &mut Map<String, Value>) {
    let Some(Value::Array(types)) = node.get("type") else {
        return;
    };
    if types.len() < 2 || !types.iter().any(|t| t == "integer") {
        return;
    }
    let others: Vec<Value> = types.iter().filter(|t| *t != "integer").cloned().collect();
    node.remove("type");
    let mut integer = Map::new();
    integer.insert("type".into(), "integer".into());
    for key in [
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "format",
    ] {
        if let Some(v) = node.remove(key) {
            integer.insert(key.into(), v);
        }
    }
    let mut rest = Map::new();
    rest.insert(
        "type".into(),
        if others.len() == 1 {
            others[0].clone()
        } else {
            Value::Array(others)
        },
    );
    node.insert(
        "anyOf".into(),
        Value::Array(vec![Value::Object(integer), Value::Object(rest)]),
    );
}

fn bound(n: i128) -> Value {
    match (u64::try_from(n), i64::try_from(n)) {
        (Ok(u), _) => Value::from(u),
        (_, Ok(i)) => Value::from(i),
        _ => Value::from(0),
    }
}

fn has_type(node: &Map<String, Value>, wanted: &str) -> bool {
    match node.get("type") {
        Some(Value::String(t)) => t == wanted,
        Some(Value::Array(types)) => types.iter().any(|t| t == wanted),
        _ => false,
    }
}

/// The schema of a command body: the command's own fields plus `command_id` and
/// `expected_version`.
pub fn command_schema<T: JsonSchema>() -> Schema {
    let mut schema = schema_for::<T>();
    let meta = schema_for::<CommandMeta>();
    let meta_props = meta
        .get("properties")
        .and_then(|p| p.as_object())
        .cloned()
        .unwrap_or_default();
    if let Some(props) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
        for (k, v) in meta_props {
            props.insert(k, v);
        }
    }
    schema
}

/// Every generated schema as `(relative path under schemas/, pretty JSON)`.
pub fn all() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut push = |path: String, schema: Schema| {
        let text = serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n";
        out.push((path, text));
    };
    for (name, schema) in Command::schemas() {
        push(format!("commands/{name}.json"), schema);
    }
    for (name, schema) in crate::events::all_schemas() {
        push(format!("events/{name}.json"), schema);
    }
    push(
        "events/envelope.json".into(),
        schema_for::<crate::envelope::EventEnvelope>(),
    );
    push(
        "replies/command-reply.json".into(),
        schema_for::<crate::reply::CommandReply>(),
    );
    push(
        "replies/query-reply.json".into(),
        schema_for::<crate::queries::QueryReply>(),
    );
    push("work/work-item.json".into(), schema_for::<crate::work::WorkItem>());
    push("work/run-log-line.json".into(), schema_for::<crate::work::RunLogLine>());
    push(
        "work/run-heartbeat.json".into(),
        schema_for::<crate::work::RunHeartbeat>(),
    );
    push(
        "work/scheduler-presence.json".into(),
        schema_for::<crate::work::SchedulerPresence>(),
    );
    push(
        "work/runner-presence.json".into(),
        schema_for::<crate::work::RunnerPresence>(),
    );
    for (name, schema) in crate::queries::schemas() {
        push(format!("queries/{name}.json"), schema);
    }
    push("views/plugin.json".into(), schema_for::<crate::views::PluginView>());
    push("views/pipeline.json".into(), schema_for::<crate::views::PipelineView>());
    push("views/run.json".into(), schema_for::<crate::views::RunView>());
    push("views/schedule.json".into(), schema_for::<crate::views::ScheduleView>());
    push("views/stats.json".into(), schema_for::<crate::views::StatsView>());
    push(
        "views/plugin-stats.json".into(),
        schema_for::<crate::views::PluginStatsView>(),
    );
    push(
        "views/projection-status.json".into(),
        schema_for::<crate::views::ProjectionStatus>(),
    );
    out
}
