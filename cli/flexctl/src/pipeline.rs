//! `flexctl pipeline create -f FILE | list | show | update | pause | resume | archive | delete`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use flexcore_contracts::commands::{ArchivePipeline, PausePipeline, ResumePipeline};
use flexcore_contracts::lifecycle::PipelineStatus;
use flexcore_contracts::views::{PipelineView, ScheduleView};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::api::{Api, ApiError};
use crate::apply::ApplyOptions;
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
    /// Make a pipeline what a file says (steps, policies, owner, tags, schedules) and show
    /// the difference; `flexctl apply -f FILE` does the same, finding it by the file's name.
    Update(UpdateArgs),
    /// Pause: no new runs start (runs in flight finish).
    Pause(ReasonArgs),
    /// Resume a paused pipeline.
    Resume(Target),
    /// Archive for good: no more runs, its schedules stop; the name is free for a new pipeline.
    Archive(ReasonArgs),
    /// The same as archive: FlexCore's history is an immutable event log, so a pipeline
    /// is never erased; archiving is final (no more runs, its schedules stop firing) and
    /// it stays listed, as `archived` (`pipeline list --state active` leaves it out).
    Delete(ReasonArgs),
}

/// `-f FILE`.
#[derive(Debug, Clone, Args)]
pub struct FileArgs {
    /// The pipeline file (YAML).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Check the file without creating anything: the command service decides the create
    /// as a dry run (registered plugins, their kinds and config schemas, the name free),
    /// the schedules are checked as the service decodes them; errors name their line.
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
    /// The pipeline file (YAML); its name must be the pipeline's. With a `schedules:` key,
    /// the pipeline's schedules become the file's (see --keep-unlisted-schedules).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// `--dry-run`, `--keep-unlisted-schedules`.
    #[command(flatten)]
    pub options: ApplyOptions,
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
    /// Only pipelines in this state.
    #[arg(long, value_parser = table::states(PipelineStatus::ALL, PipelineStatus::as_str))]
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
    // The file first: its own mistakes need no server.
    let loaded = match command {
        PipelineCommand::Create(FileArgs { file, .. }) | PipelineCommand::Update(UpdateArgs { file, .. }) => {
            Some(pipeline_file::load(file)?)
        }
        _ => None,
    };
    let api = nats.api().await?;
    match (command, loaded) {
        (PipelineCommand::Create(args), Some(loaded)) if args.dry_run => {
            crate::apply::check_create(&api, &loaded).await?;
            let checked = Checked {
                file: args.file.clone(),
                pipeline: loaded.pipeline.name.to_string(),
                steps: loaded.pipeline.steps.len(),
                schedules: loaded.pipeline.schedules.len(),
                valid: true,
                dry_run: true,
            };
            table::emit(output, &checked, || checked.text())
        }
        (PipelineCommand::Create(_), Some(loaded)) => {
            let created = create(&api, &loaded).await?;
            table::emit(output, &created, || created.text())
        }
        (PipelineCommand::Update(args), Some(loaded)) => {
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
            let outcome = crate::apply::apply(&api, &loaded, Some(current), &args.options).await?;
            table::emit(output, &outcome, || outcome.text())
        }
        (command, _) => others(api, command, output).await,
    }
}

/// The commands that take no file.
async fn others(api: Api, command: &PipelineCommand, output: Output) -> anyhow::Result<()> {
    match command {
        PipelineCommand::Create(_) | PipelineCommand::Update(_) => Ok(()),
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
        PipelineCommand::Pause(args) => simple(&api, "pause", &args.pipeline, args.reason.as_deref(), output).await,
        PipelineCommand::Resume(target) => simple(&api, "resume", &target.pipeline, None, output).await,
        PipelineCommand::Archive(args) => simple(&api, "archive", &args.pipeline, args.reason.as_deref(), output).await,
        PipelineCommand::Delete(args) => {
            tracing::info!(
                "pipeline delete archives: the event log keeps the pipeline's history; an archived pipeline runs no more"
            );
            simple(&api, "archive", &args.pipeline, args.reason.as_deref(), output).await
        }
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

/// What `pipeline create --dry-run` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Checked {
    /// The file.
    pub file: PathBuf,
    /// The pipeline's name.
    pub pipeline: String,
    /// Its steps.
    pub steps: usize,
    /// Its schedules.
    pub schedules: usize,
    /// Always true (an invalid file is an error).
    pub valid: bool,
    /// Always true: nothing was created.
    pub dry_run: bool,
}

impl Checked {
    fn text(&self) -> String {
        format!(
            "{}: pipeline {} with {} step(s) and {} schedule(s) is valid (checked by the command service); nothing was created",
            self.file.display(),
            self.pipeline,
            self.steps,
            self.schedules
        )
    }
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
    let accepted = api
        .command("pipeline.create", &body)
        .await
        .map_err(|e| explain_create(loaded, e))?;
    let pipeline_id = accepted.aggregate_id;
    let mut written = accepted.global_position;
    let mut schedule_ids = Vec::new();
    for (i, schedule) in loaded.pipeline.schedules.iter().enumerate() {
        let mut body = serde_json::to_value(schedule)?;
        body["pipeline_id"] = json!(pipeline_id);
        let accepted = api
            .command("schedule.create", &body)
            .await
            .map_err(|e| explain(loaded, &format!("schedules[{i}]"), e))
            .with_context(|| format!("pipeline {pipeline_id} was created; schedule {i} was not"))?;
        written = written.max(accepted.global_position);
        schedule_ids.push(accepted.aggregate_id);
    }
    // The next command often names the pipeline (`run start NAME`), which the read model
    // resolves: return once it shows what was just written.
    api.settle("pipeline.get", pipeline_id, written).await;
    Ok(Created {
        pipeline_id,
        name: loaded.pipeline.name.to_string(),
        schedule_ids,
    })
}

/// A refusal of `pipeline.create`: a name taken says how to change that pipeline instead.
pub(crate) fn explain_create(loaded: &Loaded, e: ApiError) -> anyhow::Error {
    if e.reason() == Some(flexcore_contracts::ErrorReason::Unique) {
        let text = anyhow::anyhow!(
            "{}:{}: {}\nhint: `flexctl pipeline update {} -f {}` (or `flexctl apply -f {}`) changes the existing pipeline to match the file",
            loaded.path.display(),
            loaded.document.position("name").map_or(1, |p| p.line),
            crate::error::client_text(&e),
            loaded.pipeline.name.as_str(),
            loaded.path.display(),
            loaded.path.display()
        );
        crate::error::explained(&text, e)
    } else {
        explain(loaded, "", e)
    }
}

/// A refusal about the file (at `prefix` in it) pointing at its line; other errors as they are.
pub(crate) fn explain(loaded: &Loaded, prefix: &str, e: ApiError) -> anyhow::Error {
    // The refusal's code stays for `--output json`.
    match e.refusal().map(|error| loaded.refusal(prefix, error)) {
        Some(text) => crate::error::explained(&text, e),
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
    let ids = table::short_ids(&items.iter().map(|p| p.pipeline_id).collect::<Vec<_>>());
    for (p, id) in items.iter().zip(ids) {
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
            id,
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
