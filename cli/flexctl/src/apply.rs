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

use clap::Args;
use flexcore_contracts::commands::CreatePipeline;
use flexcore_contracts::model::ScheduleSpec;
use flexcore_contracts::views::{PipelineView, ScheduleView};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::api::Api;
use crate::cli::Output;
use crate::nats::Nats;
use crate::pipeline::{explain, strip_nulls};
use crate::pipeline_file::{self, Loaded, ScheduleEntry};
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

/// What happens to one schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleChange {
    /// `create`, `update`, `replace` (an update cannot unset `start_at`/`end_at`: deleted
    /// and created again), `delete`, `keep` (unlisted, kept) or `unchanged`.
    pub action: &'static str,
    /// The server's schedule (none for `create`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<Uuid>,
    /// Its position in the file (none for `delete` and `keep`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// Cron expression.
    pub cron: String,
    /// Time zone.
    pub timezone: String,
    /// The fields that change (`paused` included).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
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
    let Some(current) = existing else {
        return create(api, loaded, options.dry_run).await;
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
            schedule_commands(api, loaded, current.pipeline_id, change, dry_run).await?;
        }
    }
    Ok(outcome)
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

/// Pairs the file's schedules with the server's (same spec first, then same cron and
/// time zone) and says what happens to each.
pub fn schedule_changes(
    file: &[ScheduleEntry],
    server: &[ScheduleView],
    keep_unlisted: bool,
) -> anyhow::Result<Vec<ScheduleChange>> {
    let specs: Vec<ScheduleSpec> = file.iter().map(ScheduleEntry::spec).collect::<Result<_, _>>()?;
    let mut taken = vec![false; server.len()];
    let mut matched: Vec<Option<usize>> = vec![None; file.len()];
    let same_key = |a: &ScheduleSpec, b: &ScheduleSpec| a.cron == b.cron && a.timezone == b.timezone;
    for pass in [true, false] {
        for (i, spec) in specs.iter().enumerate() {
            if matched[i].is_some() {
                continue;
            }
            let found = server
                .iter()
                .enumerate()
                .position(|(j, s)| !taken[j] && if pass { s.spec == *spec } else { same_key(&s.spec, spec) });
            if let Some(j) = found {
                taken[j] = true;
                matched[i] = Some(j);
            }
        }
    }
    let mut out = Vec::new();
    for (i, (entry, spec)) in file.iter().zip(&specs).enumerate() {
        let Some(j) = matched[i] else {
            out.push(ScheduleChange {
                action: "create",
                schedule_id: None,
                index: Some(i),
                cron: spec.cron.clone(),
                timezone: spec.timezone.clone(),
                changes: Vec::new(),
            });
            continue;
        };
        let current = &server[j];
        let (from, to) = (json!(current.spec), json!(spec));
        let mut changes = Vec::new();
        for key in [
            "cron",
            "timezone",
            "overlap",
            "catchup_window_seconds",
            "catchup_cap",
            "jitter_seconds",
            "start_at",
            "end_at",
        ] {
            if from.get(key) != to.get(key) {
                changes.push(FieldChange {
                    field: key.to_owned(),
                    from: from.get(key).cloned().unwrap_or(Value::Null),
                    to: to.get(key).cloned().unwrap_or(Value::Null),
                });
            }
        }
        // An update cannot take a bound away: such a schedule is made again.
        let unsets = changes.iter().any(|c| c.to.is_null());
        let paused = current.state == "paused";
        if paused != entry.paused {
            changes.push(FieldChange {
                field: "paused".to_owned(),
                from: json!(paused),
                to: json!(entry.paused),
            });
        }
        out.push(ScheduleChange {
            action: match (changes.is_empty(), unsets) {
                (true, _) => "unchanged",
                (false, true) => "replace",
                (false, false) => "update",
            },
            schedule_id: Some(current.schedule_id),
            index: Some(i),
            cron: spec.cron.clone(),
            timezone: spec.timezone.clone(),
            changes,
        });
    }
    for s in server.iter().zip(&taken).filter(|(_, taken)| !**taken).map(|(s, _)| s) {
        out.push(ScheduleChange {
            action: if keep_unlisted { "keep" } else { "delete" },
            schedule_id: Some(s.schedule_id),
            index: None,
            cron: s.spec.cron.clone(),
            timezone: s.spec.timezone.clone(),
            changes: Vec::new(),
        });
    }
    Ok(out)
}

/// Sends the commands of one schedule change (as dry runs when `dry_run`).
async fn schedule_commands(
    api: &Api,
    loaded: &Loaded,
    pipeline_id: Uuid,
    change: &ScheduleChange,
    dry_run: bool,
) -> anyhow::Result<()> {
    let at = change.index.map(|i| format!("schedules[{i}]")).unwrap_or_default();
    let send = |name: &'static str, mut body: Value| {
        let at = at.clone();
        async move {
            if dry_run {
                body["dry_run"] = json!(true);
            }
            api.command(name, &body)
                .await
                .map(|_| ())
                .map_err(|e| explain(loaded, &at, e))
        }
    };
    let entry = change.index.and_then(|i| loaded.pipeline.schedules.get(i));
    let id = change.schedule_id;
    let create_body = || -> anyhow::Result<Value> {
        let mut body = serde_json::to_value(entry.ok_or_else(|| anyhow::anyhow!("no schedule to create"))?)?;
        body["pipeline_id"] = json!(pipeline_id);
        Ok(body)
    };
    match change.action {
        "create" => send("schedule.create", create_body()?).await,
        "delete" => send("schedule.delete", json!({"schedule_id": id})).await,
        "replace" => {
            // A dry run of the create would be checked against the schedule still there:
            // nothing about it conflicts, so both are checked independently.
            send("schedule.delete", json!({"schedule_id": id})).await?;
            send("schedule.create", create_body()?).await
        }
        "update" => {
            let mut body = json!({"schedule_id": id});
            let mut pause = None;
            for c in &change.changes {
                if c.field == "paused" {
                    pause = Some(c.to == json!(true));
                } else {
                    body[c.field.as_str()] = c.to.clone();
                }
            }
            if body.as_object().is_some_and(|b| b.len() > 1) {
                send("schedule.update", body).await?;
            }
            match pause {
                Some(true) => send("schedule.pause", json!({"schedule_id": id})).await,
                Some(false) => send("schedule.resume", json!({"schedule_id": id})).await,
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}
