//! `flexctl apply -f FILE`: makes the pipeline named in a pipeline file, and its schedules,
//! what the file says: creates it, or updates what differs, and shows the difference.
//! `pipeline update` runs the same reconciliation on a pipeline it names.
//!
//! Everything is checked before anything is changed: the pipeline's command and every
//! schedule command are first sent as dry runs (`dry_run: true`, decided by the command
//! service exactly as the real command, nothing written), so a file with one bad schedule
//! changes nothing. With `--dry-run` that is all that happens.
//!
//! Schedules have no names: a schedule in the file is the server's schedule with the same
//! spec, else the one with the same cron and time zone (whose other fields are updated).
//! Schedules of the pipeline that the file does not list are deleted, as `kubectl apply`
//! and Terraform remove what a manifest no longer declares, unless
//! `--keep-unlisted-schedules`; a file without a `schedules:` key leaves them all alone.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use flexcore_contracts::commands::CreatePipeline;
use flexcore_contracts::views::{PipelineView, ScheduleView};
use flexcore_contracts::ErrorReason;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

mod schedules;

pub use schedules::{schedule_changes, ScheduleChange};

use crate::api::{Api, ApiError};
use crate::cli::Output;
use crate::nats::Nats;
use crate::pipeline::{explain, strip_nulls};
use crate::pipeline_file::{self, Loaded};
use crate::table;

/// `flexctl apply -f FILE`.
#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// The pipeline file (YAML); the pipeline is found by its `name`.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// `--dry-run`, `--keep-unlisted-schedules`.
    #[command(flatten)]
    pub options: ApplyOptions,
}

/// What `apply` and `pipeline update` share.
#[derive(Debug, Clone, Default, Args)]
pub struct ApplyOptions {
    /// Show the difference and check it with the command service (plugins, config
    /// schemas, schedules), changing nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep the pipeline's schedules that the file does not list (by default they are
    /// deleted, as the file is the whole truth about the pipeline).
    #[arg(long)]
    pub keep_unlisted_schedules: bool,
}

/// One changed field: `tags`, `steps[1].config`, `retry.max_attempts`, `jitter_seconds`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// The field, as the file writes it.
    pub field: String,
    /// Its value on the server (`null`: absent).
    pub from: Value,
    /// Its value in the file (`null`: absent).
    pub to: Value,
}

/// The difference between a file and the server, and what was done about it.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The file.
    pub file: PathBuf,
    /// The pipeline's name.
    pub pipeline: String,
    /// Its id (none when a dry run would create it).
    pub pipeline_id: Option<Uuid>,
    /// `create`, `update` or `unchanged`.
    pub action: &'static str,
    /// The pipeline's changed fields (for `update`).
    pub changes: Vec<FieldChange>,
    /// Every schedule of the file and the server, and what happens to it; empty when the
    /// file has no `schedules:` key (the pipeline's schedules are left alone).
    pub schedules: Vec<ScheduleChange>,
    /// True when nothing was changed on purpose (`--dry-run`).
    pub dry_run: bool,
    /// True when something changed (or, on a dry run, would change).
    pub changed: bool,
}

impl Outcome {
    /// The readable difference: `+` added, `~` changed, `-` removed.
    pub fn text(&self) -> String {
        let id = self.pipeline_id.map(|id| format!(" ({id})")).unwrap_or_default();
        let mut text = format!("pipeline {}{id}: {}\n", self.pipeline, self.action);
        for c in &self.changes {
            text.push_str(&format!("  ~ {}: {} → {}\n", c.field, show(&c.from), show(&c.to)));
        }
        for s in &self.schedules {
            let sign = match s.action {
                "create" => "+",
                "delete" => "-",
                "unchanged" | "keep" => " ",
                _ => "~",
            };
            let id = s.schedule_id.map(|id| format!(" ({id})")).unwrap_or_default();
            let what = match s.action {
                "unchanged" => String::new(),
                "keep" => " (not in the file; kept)".to_owned(),
                action => format!(": {action}"),
            };
            text.push_str(&format!("  {sign} schedule {:?} {}{id}{what}\n", s.cron, s.timezone));
            for c in &s.changes {
                text.push_str(&format!("      {}: {} → {}\n", c.field, show(&c.from), show(&c.to)));
            }
        }
        text.push_str(match (self.changed, self.dry_run) {
            (false, _) => "no changes: the server matches the file",
            (true, true) => "dry run: checked by the command service; nothing was changed",
            (true, false) => "applied",
        });
        text
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::Null => "(none)".to_owned(),
        other => other.to_string(),
    }
}

/// Runs `flexctl apply`.
pub async fn run(nats: &Nats, args: &ApplyArgs, output: Output) -> anyhow::Result<()> {
    let loaded = pipeline_file::load(&args.file)?;
    let api = nats.api().await?;
    let outcome = apply(&api, &loaded, None, &args.options).await?;
    table::emit(output, &outcome, || outcome.text())
}

/// The pipeline named `name` that is not archived, if any (an archived one's name is free).
pub async fn find(api: &Api, name: &str) -> anyhow::Result<Option<PipelineView>> {
    let found: Vec<PipelineView> = api
        .list_all("pipeline.list", &json!({"name": name, "limit": 100}), 100)
        .await?;
    Ok(found.into_iter().find(|p| p.name == name && p.state != "archived"))
}

/// Makes the server match `loaded` (or with `dry_run`, checks that it could), for the
/// pipeline `existing` when the caller found it already (`pipeline update`), else the one
/// with the file's name, created when there is none.
pub async fn apply(
    api: &Api,
    loaded: &Loaded,
    existing: Option<PipelineView>,
    options: &ApplyOptions,
) -> anyhow::Result<Outcome> {
    let name = loaded.pipeline.name.as_str();
    let existing = match existing {
        Some(p) => Some(p),
        None => find(api, name).await?,
    };
    let managed = loaded.document.value.get("schedules").is_some();
    let current = match existing {
        Some(current) => current,
        None => match create(api, loaded, options.dry_run).await {
            // The name is taken by a pipeline the read model does not show yet (created
            // moments ago): once it does, that is the pipeline to update.
            Err(error) => match taken_by(&error) {
                Some(owner) => match projected(api, owner).await? {
                    Some(current) => current,
                    None => return Err(error),
                },
                None => return Err(error),
            },
            created => return created,
        },
    };
    let desired = desired(loaded)?;
    let changes = pipeline_changes(&current, &desired);
    let schedules = if managed {
        let on_server: Vec<ScheduleView> = api
            .list_all(
                "schedule.list",
                &json!({"pipeline_id": current.pipeline_id, "limit": 1000}),
                10_000,
            )
            .await?;
        let on_server: Vec<ScheduleView> = on_server.into_iter().filter(|s| s.state != "deleted").collect();
        schedule_changes(&loaded.pipeline.schedules, &on_server, options.keep_unlisted_schedules)?
    } else {
        Vec::new()
    };
    let changed = !changes.is_empty() || schedules.iter().any(|s| !matches!(s.action, "unchanged" | "keep"));
    let outcome = Outcome {
        file: loaded.path.clone(),
        pipeline: name.to_owned(),
        pipeline_id: Some(current.pipeline_id),
        action: if changes.is_empty() { "unchanged" } else { "update" },
        changes,
        schedules,
        dry_run: options.dry_run,
        changed,
    };
    // Check everything, then change it.
    for dry_run in [true, false] {
        if !dry_run && options.dry_run {
            break;
        }
        if !outcome.changes.is_empty() {
            let body = update_body(current.pipeline_id, &desired, &outcome.changes, dry_run)?;
            api.command("pipeline.update", &body)
                .await
                .map_err(|e| explain(loaded, "", e))?;
        }
        for change in &outcome.schedules {
            schedules::schedule_commands(api, loaded, current.pipeline_id, change, dry_run).await?;
        }
    }
    Ok(outcome)
}

/// The unique scope of pipeline names in the command service's refusals (`details.scope`).
const PIPELINE_NAME_SCOPE: &str = "pipeline_name";

/// The pipeline holding the file's name, when `error` is the command service refusing a
/// create because the name is taken (its `owner` detail).
fn taken_by(error: &anyhow::Error) -> Option<Uuid> {
    let refusal = error.chain().find_map(|cause| {
        cause
            .downcast_ref::<ApiError>()
            .or_else(|| cause.downcast_ref::<crate::error::Explained>().map(|e| &e.error))
    })?;
    let body = refusal.refusal()?;
    let scope = body.details.extra.get("scope").and_then(Value::as_str);
    if refusal.reason() != Some(ErrorReason::Unique) || scope != Some(PIPELINE_NAME_SCOPE) {
        return None;
    }
    body.details.extra.get("owner")?.as_str()?.parse().ok()
}

/// Pipeline `id` as the read model shows it, waiting up to 10 s for it to get there.
async fn projected(api: &Api, id: Uuid) -> anyhow::Result<Option<PipelineView>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match api.query::<PipelineView>("pipeline.get", &json!({"id": id})).await {
            Ok(view) if view.state != "archived" => return Ok(Some(view)),
            Ok(_) => return Ok(None),
            Err(e) if e.reason() == Some(ErrorReason::NotFound) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) if e.reason() == Some(ErrorReason::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A pipeline that does not exist yet: the create checked by the command service (a dry
/// run), the schedules by the contract's decoder and calendar (the command service's own
/// checks; their dry run needs the pipeline to exist), then, unless `dry_run`, created.
async fn create(api: &Api, loaded: &Loaded, dry_run: bool) -> anyhow::Result<Outcome> {
    check_create(api, loaded).await?;
    let mut outcome = Outcome {
        file: loaded.path.clone(),
        pipeline: loaded.pipeline.name.to_string(),
        pipeline_id: None,
        action: "create",
        changes: Vec::new(),
        schedules: Vec::new(),
        dry_run,
        changed: true,
    };
    let ids = if dry_run {
        vec![None; loaded.pipeline.schedules.len()]
    } else {
        let created = crate::pipeline::create(api, loaded).await?;
        outcome.pipeline_id = Some(created.pipeline_id);
        created.schedule_ids.into_iter().map(Some).collect()
    };
    for (i, (entry, schedule_id)) in loaded.pipeline.schedules.iter().zip(ids).enumerate() {
        let spec = entry.spec()?;
        outcome.schedules.push(ScheduleChange {
            action: "create",
            schedule_id,
            index: Some(i),
            cron: spec.cron,
            timezone: spec.timezone,
            changes: Vec::new(),
        });
    }
    Ok(outcome)
}

/// Checks a new pipeline's file as creating it would, writing nothing: `pipeline.create`
/// as a dry run, and each schedule through the contract's decoder (a placeholder pipeline
/// id: the pipeline does not exist yet). Errors name their line in the file.
pub async fn check_create(api: &Api, loaded: &Loaded) -> anyhow::Result<()> {
    let mut body = strip_nulls(serde_json::to_value(&loaded.pipeline)?);
    body["dry_run"] = json!(true);
    api.command("pipeline.create", &body)
        .await
        .map_err(|e| crate::pipeline::explain_create(loaded, e))?;
    for (i, schedule) in loaded.pipeline.schedules.iter().enumerate() {
        let mut body = serde_json::to_value(schedule)?;
        body["pipeline_id"] = json!(Uuid::nil());
        let subject = flexcore_contracts::subjects::command("schedule", "create");
        if let Err(error) = flexcore_contracts::commands::decode(&subject, &serde_json::to_vec(&body)?) {
            return Err(loaded.refusal(&format!("schedules[{i}]"), &error));
        }
    }
    Ok(())
}

/// The pipeline the file describes, every default filled in as `pipeline.create` fills it:
/// what the server should hold (a field the file leaves out is its default, not "keep").
fn desired(loaded: &Loaded) -> anyhow::Result<CreatePipeline> {
    let body = strip_nulls(serde_json::to_value(&loaded.pipeline)?);
    serde_json::from_value(body).map_err(|e| loaded.error_at("", &format!("the file is no pipeline: {e}")))
}

/// `pipeline.update` setting the fields that `changes` names to the file's values, and
/// only those: steps not given stay pinned as they are.
fn update_body(id: Uuid, desired: &CreatePipeline, changes: &[FieldChange], dry_run: bool) -> anyhow::Result<Value> {
    let all = serde_json::to_value(desired)?;
    let mut body = json!({"pipeline_id": id});
    for change in changes {
        // `steps[1].config` → `steps`, `retry.max_attempts` → `retry`.
        let field = change.field.split(['.', '[']).next().unwrap_or_default();
        // `pipeline.update` keeps a description it is not given: an empty one clears it.
        let value = match all.get(field) {
            None | Some(Value::Null) if field == "description" => json!(""),
            value => value.cloned().unwrap_or(Value::Null),
        };
        body[field] = value;
    }
    if dry_run {
        body["dry_run"] = json!(true);
    }
    Ok(body)
}

/// The fields of `current` that differ from `desired`, in the file's order.
pub fn pipeline_changes(current: &PipelineView, desired: &CreatePipeline) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    let mut field = |name: &str, from: Value, to: Value| {
        if from != to {
            changes.push(FieldChange {
                field: name.to_owned(),
                from,
                to,
            });
        }
    };
    field("owner", json!(current.owner), json!(desired.owner));
    let description = |d: Option<&str>| d.filter(|d| !d.is_empty()).map_or(Value::Null, |d| json!(d));
    field(
        "description",
        description(current.description.as_deref()),
        description(desired.description.as_deref()),
    );
    field("tags", json!(current.tags), json!(desired.tags));
    let d = &current.definition;
    let steps = d.steps.len().max(desired.steps.len());
    for i in 0..steps {
        match (d.steps.get(i), desired.steps.get(i)) {
            (Some(from), Some(to)) => {
                field(&format!("steps[{i}].plugin"), json!(from.plugin), json!(to.plugin));
                field(
                    &format!("steps[{i}].config"),
                    serde_json::to_value(&from.config).unwrap_or_default(),
                    serde_json::to_value(&to.config).unwrap_or_default(),
                );
            }
            (from, to) => field(&format!("steps[{i}]"), step_value(from), step_value(to)),
        }
    }
    field(
        "max_active_runs",
        json!(d.max_active_runs),
        json!(desired.max_active_runs),
    );
    let (from, to) = (json!(d.retry), json!(desired.retry));
    for key in [
        "max_attempts",
        "initial_backoff_seconds",
        "max_backoff_seconds",
        "multiplier",
    ] {
        field(&format!("retry.{key}"), from[key].clone(), to[key].clone());
    }
    field(
        "run_timeout_seconds",
        json!(d.run_timeout_seconds),
        json!(desired.run_timeout_seconds),
    );
    changes
}

fn step_value<T: Serialize>(step: Option<&T>) -> Value {
    let value = step.map(|s| serde_json::to_value(s).unwrap_or_default());
    match value {
        Some(Value::Object(map)) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| k == "plugin" || k == "config")
                .collect(),
        ),
        other => other.unwrap_or(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_create_refused_for_a_taken_pipeline_name_names_the_pipeline_to_update() {
        let owner = Uuid::now_v7();
        let refusal = |scope: &str| {
            let body =
                flexcore_contracts::ErrorBody::new(ErrorReason::Unique, "pipeline name \"orders\" is already used")
                    .with("scope", scope)
                    .with("owner", owner.to_string());
            ApiError::Refused {
                what: "pipeline.create".into(),
                error: body,
            }
        };
        // As create reports it (explained at the file's line), or bare.
        let explained = crate::error::explained(&anyhow::anyhow!("demo.yaml:1: taken"), refusal("pipeline_name"));
        assert_eq!(taken_by(&explained), Some(owner));
        assert_eq!(taken_by(&anyhow::Error::new(refusal("pipeline_name"))), Some(owner));
        // Any other refusal or scope is not a pipeline to update.
        assert_eq!(taken_by(&anyhow::Error::new(refusal("something_else"))), None);
        let invalid = ApiError::Refused {
            what: "pipeline.create".into(),
            error: flexcore_contracts::ErrorBody::new(ErrorReason::InvalidValue, "bad")
                .with("owner", owner.to_string()),
        };
        assert_eq!(taken_by(&anyhow::Error::new(invalid)), None);
        assert_eq!(taken_by(&anyhow::anyhow!("no answer")), None);
    }

    fn view(tags: Value, config: Value) -> PipelineView {
        let step = |plugin: &str, kind: &str, config: Value| json!({"plugin": plugin, "plugin_id": Uuid::nil(), "kind": kind, "runtime": "wasm", "config": config});
        serde_json::from_value(json!({
            "pipeline_id": Uuid::nil(), "name": "p", "owner": "o", "description": "d", "tags": tags, "state": "active",
            "definition_version": 1, "bookmark": null, "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z", "aggregate_version": 1,
            "definition": {
                "steps": [step("csv@1.0.0", "extractor", config), step("jsonl@1.0.0", "loader", json!({}))],
                "max_active_runs": 1, "run_timeout_seconds": 3600,
                "retry": {"max_attempts": 3, "initial_backoff_seconds": 10, "max_backoff_seconds": 600, "multiplier": 2.0}
            }
        }))
        .unwrap()
    }

    fn desired(text: &str) -> CreatePipeline {
        let loaded = pipeline_file::parse(std::path::Path::new("p.yaml"), text).unwrap();
        super::desired(&loaded).unwrap()
    }

    const FILE: &str = "name: p\nowner: o\ndescription: d\ntags: [a]\nsteps:\n  - plugin: csv@1.0.0\n    config: {x: 1}\n  - plugin: jsonl@1.0.0\n";

    #[test]
    fn a_file_matching_the_server_has_no_changes_and_defaults_count_as_given() {
        assert_eq!(
            pipeline_changes(&view(json!(["a"]), json!({"x": 1})), &desired(FILE)),
            []
        );
    }

    #[test]
    fn changes_name_the_field_as_the_file_writes_it() {
        let file = FILE
            .replace("description: d\n", "")
            .replace("{x: 1}", "{x: 2}")
            .replace("tags: [a]", "tags: [a, b]\nretry: {max_attempts: 1}")
            + "  - plugin: extra@1.0.0\n";
        let changes = pipeline_changes(&view(json!(["a"]), json!({"x": 1})), &desired(&file));
        let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "description",
                "tags",
                "steps[0].config",
                "steps[2]",
                "retry.max_attempts"
            ]
        );
        assert_eq!(changes[4].from, json!(3));
        assert_eq!(changes[4].to, json!(1));
        // The update sends exactly the changed fields; no description clears it.
        let body = update_body(Uuid::nil(), &desired(&file), &changes, true).unwrap();
        let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["description", "dry_run", "pipeline_id", "retry", "steps", "tags"]
        );
        assert_eq!(body["description"], json!(""));
        assert_eq!(body["steps"].as_array().map(Vec::len), Some(3));
    }
}
