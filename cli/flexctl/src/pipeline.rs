//! `flexctl pipeline create -f FILE | list | show | update | pause | resume | archive`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use flexcore_contracts::commands::{ArchivePipeline, PausePipeline, ResumePipeline};
use flexcore_contracts::views::{PipelineView, ScheduleView};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::api::{Api, ApiError};
use crate::cli::Output;
use crate::nats::Nats;
use crate::pipeline_file::{self, Loaded};
use crate::table::{self, Table};

/// `flexctl pipeline …`.
#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Create a pipeline (and its schedules) from a YAML file (see examples/).
    Create(FileArgs),
    /// List pipelines.
    List(ListArgs),
    /// Show one pipeline: definition, bookmark, last run, schedules.
    Show(Target),
    /// Replace a pipeline's definition (steps, policies, owner, tags) with a file's.
    Update(UpdateArgs),
    /// Pause: no new runs start (runs in flight finish).
    Pause(ReasonArgs),
    /// Resume a paused pipeline.
    Resume(Target),
    /// Archive for good: no more runs, the name stays taken.
    Archive(ReasonArgs),
}

/// `-f FILE`.
#[derive(Debug, Clone, Args)]
pub struct FileArgs {
    /// The pipeline file (YAML).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Check the file (locally and against the registered plugins' config schemas is
    /// done by the service; this only checks the file itself) without sending anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// A pipeline by id or name.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Pipeline id or name.
    pub pipeline: String,
}

/// `update <pipeline> -f FILE`.
#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    /// Pipeline id or name.
    pub pipeline: String,
    /// The pipeline file (YAML); its name must be the pipeline's, its schedules are ignored.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
}

/// A pipeline and a reason.
#[derive(Debug, Clone, Args)]
pub struct ReasonArgs {
    /// Pipeline id or name.
    pub pipeline: String,
    /// Why (recorded in the event).
    #[arg(long)]
    pub reason: Option<String>,
}

/// `pipeline list` filters.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only this state (active, paused, archived).
    #[arg(long)]
    pub state: Option<String>,
    /// Only names matching (exact, or a prefix ending in `*`).
    #[arg(long)]
    pub name: Option<String>,
    /// Only pipelines with this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// Runs a `pipeline` subcommand.
pub async fn run(nats: &Nats, command: &PipelineCommand, output: Output) -> anyhow::Result<()> {
    if let PipelineCommand::Create(args) = command {
        if args.dry_run {
            let loaded = pipeline_file::load(&args.file)?;
            return crate::write_stdout(&format!(
                "{}: pipeline {} with {} step(s) and {} schedule(s) is well-formed",
                args.file.display(),
                loaded.pipeline.name.as_str(),
                loaded.pipeline.steps.len(),
                loaded.pipeline.schedules.len()
            ));
        }
    }
    let api = nats.api().await?;
    match command {
        PipelineCommand::Create(args) => {
            let loaded = pipeline_file::load(&args.file)?;
            let created = create(&api, &loaded).await?;
            table::emit(output, &created, || created.text())
        }
        PipelineCommand::List(args) => {
            let filter = json!({"state": args.state, "name": args.name, "tag": args.tag, "sort_by": "name", "order": "asc",
                                "limit": args.limit.clamp(1, 1000)});
            let items: Vec<PipelineView> = api.list_all("pipeline.list", &strip_nulls(filter), args.limit).await?;
            table::emit(output, &items, || list_text(&items))
        }
        PipelineCommand::Show(target) => {
            let id = api.pipeline_id(&target.pipeline).await?;
            let pipeline: PipelineView = api.query("pipeline.get", &json!({"id": id})).await?;
            let schedules: Vec<ScheduleView> = api
                .list_all("schedule.list", &json!({"pipeline_id": id, "limit": 1000}), 1000)
                .await?;
            let both = json!({"pipeline": pipeline, "schedules": schedules});
            table::emit(output, &both, || show_text(&pipeline, &schedules))
        }
        PipelineCommand::Update(args) => {
            let loaded = pipeline_file::load(&args.file)?;
            let id = api.pipeline_id(&args.pipeline).await?;
            let current: PipelineView = api.query("pipeline.get", &json!({"id": id})).await?;
            if current.name != loaded.pipeline.name.as_str() {
                return Err(loaded.error_at(
                    "name",
                    &format!(
                        "the file is pipeline {:?} but {} is {:?}; a pipeline cannot be renamed",
                        loaded.pipeline.name.as_str(),
                        args.pipeline,
                        current.name
                    ),
                ));
            }
            let mut body = serde_json::to_value(&loaded.pipeline)?;
            if let Some(map) = body.as_object_mut() {
                map.remove("name");
                map.insert("pipeline_id".into(), json!(id));
                map.entry("description").or_insert(Value::Null);
            }
            let body = strip_nulls(body);
            let accepted = api
                .command("pipeline.update", &body)
                .await
                .map_err(|e| explain(&loaded, "", e))?;
            let result = json!({"pipeline_id": id, "version": accepted.version});
            table::emit(output, &result, || {
                format!("updated pipeline {} (version {})", current.name, accepted.version)
            })
        }
        PipelineCommand::Pause(args) => simple(&api, "pause", &args.pipeline, args.reason.as_deref(), output).await,
        PipelineCommand::Resume(target) => simple(&api, "resume", &target.pipeline, None, output).await,
        PipelineCommand::Archive(args) => simple(&api, "archive", &args.pipeline, args.reason.as_deref(), output).await,
    }
}

async fn simple(api: &Api, action: &str, pipeline: &str, reason: Option<&str>, output: Output) -> anyhow::Result<()> {
    let id = api.pipeline_id(pipeline).await?;
    let reason = reason.map(str::to_owned);
    let accepted = match action {
        "pause" => {
            api.send(&PausePipeline {
                pipeline_id: id,
                reason,
            })
            .await?
        }
        "resume" => api.send(&ResumePipeline { pipeline_id: id }).await?,
        _ => {
            api.send(&ArchivePipeline {
                pipeline_id: id,
                reason,
            })
            .await?
        }
    };
    let result = json!({"pipeline_id": id, "action": action, "version": accepted.version});
    table::emit(output, &result, || format!("pipeline {pipeline}: {action} done"))
}

/// What `pipeline create` made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Created {
    /// The pipeline.
    pub pipeline_id: Uuid,
    /// Its name.
    pub name: String,
    /// Its schedules, in file order.
    pub schedule_ids: Vec<Uuid>,
}

impl Created {
    fn text(&self) -> String {
        let mut text = format!("created pipeline {} ({})", self.name, self.pipeline_id);
        for id in &self.schedule_ids {
            text.push_str(&format!("\ncreated schedule {id}"));
        }
        text.push_str(&format!("\nnext: flexctl run start {} --follow", self.name));
        text
    }
}

/// Creates the pipeline of a loaded file, then its schedules.
pub async fn create(api: &Api, loaded: &Loaded) -> anyhow::Result<Created> {
    let body = strip_nulls(serde_json::to_value(&loaded.pipeline)?);
    let accepted = api.command("pipeline.create", &body).await.map_err(|e| {
        if e.reason() == Some(flexcore_contracts::ErrorReason::Unique) {
            anyhow::anyhow!(
                "{}: {e}\nhint: `flexctl pipeline update {} -f {}` changes the existing pipeline",
                loaded.path.display(),
                loaded.pipeline.name.as_str(),
                loaded.path.display()
            )
        } else {
            explain(loaded, "", e)
        }
    })?;
    let pipeline_id = accepted.aggregate_id;
    let mut schedule_ids = Vec::new();
    for (i, schedule) in loaded.pipeline.schedules.iter().enumerate() {
        let mut body = serde_json::to_value(schedule)?;
        body["pipeline_id"] = json!(pipeline_id);
        let accepted = api
            .command("schedule.create", &body)
            .await
            .map_err(|e| explain(loaded, &format!("schedules[{i}]"), e))
            .with_context(|| format!("pipeline {pipeline_id} was created; schedule {i} was not"))?;
        schedule_ids.push(accepted.aggregate_id);
    }
    Ok(Created {
        pipeline_id,
        name: loaded.pipeline.name.to_string(),
        schedule_ids,
    })
}

fn explain(loaded: &Loaded, prefix: &str, e: ApiError) -> anyhow::Error {
    match e.refusal() {
        Some(error) => loaded.refusal(prefix, error),
        None => e.into(),
    }
}

/// Drops `null` members of an object (absent optional fields).
pub fn strip_nulls(mut value: Value) -> Value {
    if let Some(map) = value.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    value
}

fn list_text(items: &[PipelineView]) -> String {
    let mut t = Table::new(&["NAME", "STATE", "STEPS", "LAST RUN", "NEXT FIRE", "OWNER", "ID"]);
    for p in items {
        let steps = p
            .definition
            .steps
            .iter()
            .map(|s| s.plugin.as_str().to_owned())
            .collect::<Vec<_>>()
            .join(" → ");
        let last = p.last_run.as_ref().map_or_else(
            || "-".to_owned(),
            |r| format!("{} {}", r.state, table::time(Some(r.requested_at))),
        );
        t.row(vec![
            p.name.clone(),
            p.state.clone(),
            steps,
            last,
            table::time(p.next_fire),
            p.owner.clone(),
            p.pipeline_id.to_string(),
        ]);
    }
    t.render("no pipelines (create one: flexctl pipeline create -f examples/demo.yaml)")
}

fn show_text(p: &PipelineView, schedules: &[ScheduleView]) -> String {
    let d = &p.definition;
    let mut text = table::fields(&[
        ("name", p.name.clone()),
        ("id", p.pipeline_id.to_string()),
        (
            "state",
            format!(
                "{}{}",
                p.state,
                p.state_reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
            ),
        ),
        ("owner", p.owner.clone()),
        ("tags", p.tags.join(", ")),
        ("description", p.description.clone().unwrap_or_default()),
        ("definition", format!("version {}", p.definition_version)),
        ("max active runs", d.max_active_runs.to_string()),
        ("run timeout", format!("{} s", d.run_timeout_seconds)),
        (
            "retry",
            format!(
                "{} attempt(s), back-off {} s ×{} up to {} s",
                d.retry.max_attempts, d.retry.initial_backoff_seconds, d.retry.multiplier, d.retry.max_backoff_seconds
            ),
        ),
        ("bookmark", serde_json::to_string(&p.bookmark).unwrap_or_default()),
        (
            "last run",
            p.last_run.as_ref().map_or_else(
                || "-".to_owned(),
                |r| format!("{} {} at {}", r.run_id, r.state, table::time(Some(r.requested_at))),
            ),
        ),
        ("next fire", table::time(p.next_fire)),
    ]);
    text.push_str("\nSTEPS\n");
    let mut steps = Table::new(&["#", "PLUGIN", "KIND", "RUNTIME", "CONFIG"]);
    for (i, s) in d.steps.iter().enumerate() {
        steps.row(vec![
            i.to_string(),
            s.plugin.as_str().to_owned(),
            format!("{:?}", s.kind).to_lowercase(),
            format!("{:?}", s.runtime).to_lowercase(),
            serde_json::to_string(&s.config).unwrap_or_default(),
        ]);
    }
    text.push_str(&steps.render("no steps"));
    text.push_str("\nSCHEDULES\n");
    text.push_str(&crate::schedule::table(schedules));
    text
}
