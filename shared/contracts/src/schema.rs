//! JSON Schema generation for every contract type. `schemas/` holds the generated files;
//! the `schemas_up_to_date` test fails when they drift from the types, and
//! `FLEXCORE_UPDATE_SCHEMAS=1 cargo test -p flexcore-contracts` rewrites them.

use schemars::{JsonSchema, Schema};

use crate::commands::{Command, CommandMeta};

/// The schema of a command body: the command's own fields plus `command_id` and
/// `expected_version`.
pub fn command_schema<T: JsonSchema>() -> Schema {
    let mut schema = schemars::schema_for!(T);
    let meta = schemars::schema_for!(CommandMeta);
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
        schemars::schema_for!(crate::envelope::EventEnvelope),
    );
    push(
        "replies/command-reply.json".into(),
        schemars::schema_for!(crate::reply::CommandReply),
    );
    push(
        "replies/query-reply.json".into(),
        schemars::schema_for!(crate::queries::QueryReply),
    );
    push(
        "work/work-item.json".into(),
        schemars::schema_for!(crate::work::WorkItem),
    );
    push(
        "work/run-log-line.json".into(),
        schemars::schema_for!(crate::work::RunLogLine),
    );
    push(
        "work/run-heartbeat.json".into(),
        schemars::schema_for!(crate::work::RunHeartbeat),
    );
    push(
        "work/scheduler-presence.json".into(),
        schemars::schema_for!(crate::work::SchedulerPresence),
    );
    push(
        "work/runner-presence.json".into(),
        schemars::schema_for!(crate::work::RunnerPresence),
    );
    push(
        "queries/get.json".into(),
        schemars::schema_for!(crate::queries::GetById),
    );
    push(
        "queries/list.json".into(),
        schemars::schema_for!(crate::queries::ListQuery),
    );
    push(
        "queries/stats.json".into(),
        schemars::schema_for!(crate::queries::StatsQuery),
    );
    push(
        "queries/projections.json".into(),
        schemars::schema_for!(crate::queries::ProjectionsQuery),
    );
    push(
        "queries/rebuild.json".into(),
        schemars::schema_for!(crate::queries::RebuildRequest),
    );
    push(
        "views/plugin.json".into(),
        schemars::schema_for!(crate::views::PluginView),
    );
    push(
        "views/pipeline.json".into(),
        schemars::schema_for!(crate::views::PipelineView),
    );
    push("views/run.json".into(), schemars::schema_for!(crate::views::RunView));
    push(
        "views/schedule.json".into(),
        schemars::schema_for!(crate::views::ScheduleView),
    );
    push(
        "views/stats.json".into(),
        schemars::schema_for!(crate::views::StatsView),
    );
    push(
        "views/projection-status.json".into(),
        schemars::schema_for!(crate::views::ProjectionStatus),
    );
    out
}
