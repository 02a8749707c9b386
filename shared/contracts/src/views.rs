//! Read models returned in a query reply's `data`, one type per view. They are built by
//! the projection service from events, so every field is derived from the event log.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::opaque::OpaqueJson;
use uuid::Uuid;

use crate::model::{
    Grants, PipelineDefinition, PluginKind, PluginRuntime, ResourceLimits, RunError, RunTrigger, ScheduleSpec,
    StreamCounters, TimeoutReason,
};

/// `plugin.get` / `plugin.list`: one registered plugin version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PluginView {
    /// Id (derived from name@version).
    pub plugin_id: Uuid,
    /// Name.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// Kind.
    pub kind: PluginKind,
    /// Runtime.
    pub runtime: PluginRuntime,
    /// `active`, `deprecated` or `disabled`.
    pub state: String,
    /// Why it was deprecated or disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    /// Module digest (wasm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_digest: Option<String>,
    /// Executable (process runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    /// Config JSON Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_schema: Option<OpaqueJson>,
    /// Resource limits.
    pub limits: ResourceLimits,
    /// Capability grants.
    pub grants: Grants,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Aggregate version the view reflects.
    pub aggregate_version: u64,
}

/// The latest run of a pipeline, inside [`PipelineView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunSummary {
    /// Run id.
    pub run_id: Uuid,
    /// Run state.
    pub state: String,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// `pipeline.get` / `pipeline.list`: a pipeline with its latest run, next scheduled fire
/// and latest bookmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PipelineView {
    /// Id.
    pub pipeline_id: Uuid,
    /// Unique name.
    pub name: String,
    /// Owner.
    pub owner: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// `active`, `paused` or `archived`.
    pub state: String,
    /// Why it was paused or archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    /// Current definition version.
    pub definition_version: u32,
    /// Current definition.
    pub definition: PipelineDefinition,
    /// Latest committed Singer STATE (`null` before the first).
    pub bookmark: OpaqueJson,
    /// The run that committed the bookmark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bookmark_run_id: Option<Uuid>,
    /// When the bookmark was committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bookmark_at: Option<DateTime<Utc>>,
    /// The latest run (from the runs view, at query time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunSummary>,
    /// The earliest next fire of its active schedules (computed at query time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_fire: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Aggregate version the view reflects.
    pub aggregate_version: u64,
}

/// One attempt of a run, inside [`RunView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AttemptView {
    /// Attempt number (the fencing token).
    pub attempt: u32,
    /// The runner that claimed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_id: Option<String>,
    /// When it was claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<DateTime<Utc>>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// `succeeded`, `failed`, `timed_out` or `cancelled` once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Its failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// Records per stream it reported last.
    pub counters: StreamCounters,
}

/// `run.get` / `run.list`: a run with its attempts, counts, errors and durations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunView {
    /// Id.
    pub run_id: Uuid,
    /// The pipeline.
    pub pipeline_id: Uuid,
    /// The pipeline's name when requested.
    pub pipeline_name: String,
    /// `requested`, `running`, `awaiting_retry`, `succeeded`, `failed`, `cancelled` or `timed_out`.
    pub state: String,
    /// What started it.
    pub trigger: RunTrigger,
    /// The schedule that fired it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<Uuid>,
    /// The slot it was fired for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Pinned definition version.
    pub definition_version: u32,
    /// The plugins the pinned definition's steps run, each once, in step order.
    #[serde(default)]
    pub plugin_ids: Vec<Uuid>,
    /// Current attempt number.
    pub attempt: u32,
    /// Every attempt so far.
    pub attempts: Vec<AttemptView>,
    /// Records per stream (of the current or final attempt).
    pub counters: StreamCounters,
    /// Sum of `counters`.
    pub records_total: u64,
    /// The last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// Why the last attempt timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_reason: Option<TimeoutReason>,
    /// Last checkpointed STATE.
    pub last_state: OpaqueJson,
    /// When the last checkpoint was committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_at: Option<DateTime<Utc>>,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// When the first attempt was claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// `finished_at − requested_at` in milliseconds, once final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Aggregate version the view reflects.
    pub aggregate_version: u64,
}

/// A skipped slot, inside [`ScheduleView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SkippedSlot {
    /// The slot.
    pub slot: DateTime<Utc>,
    /// Why it was skipped.
    pub reason: String,
}

/// `schedule.get` / `schedule.list`: a schedule with its skipped and missed slots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScheduleView {
    /// Id.
    pub schedule_id: Uuid,
    /// The pipeline it runs.
    pub pipeline_id: Uuid,
    /// The pipeline's name (looked up at query time; absent while the pipeline is not
    /// projected yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_name: Option<String>,
    /// Timing and policies.
    pub spec: ScheduleSpec,
    /// `active`, `paused` or `deleted`.
    pub state: String,
    /// Slots skipped so far.
    pub slots_skipped: u64,
    /// The latest skipped slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_skipped: Option<SkippedSlot>,
    /// Slots missed so far (outside the catch-up window or cap).
    pub slots_missed: u64,
    /// The latest missed slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_missed: Option<DateTime<Utc>>,
    /// The next slot after now (computed at query time; none when paused, deleted or ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_fire: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Aggregate version the view reflects.
    pub aggregate_version: u64,
}

/// `stats.get`: system statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatsView {
    /// Plugins by state.
    pub plugins: BTreeMap<String, u64>,
    /// Pipelines by state.
    pub pipelines: BTreeMap<String, u64>,
    /// Runs by state.
    pub runs: BTreeMap<String, u64>,
    /// Schedules by state.
    pub schedules: BTreeMap<String, u64>,
    /// Runs requested in the last hour (to the minute: all of the minute an hour ago counts,
    /// as in the next three figures).
    pub runs_last_hour: u64,
    /// Runs requested in the last 24 hours.
    pub runs_last_day: u64,
    /// Runs that reached a final state in the last 24 hours.
    pub finished_last_day: u64,
    /// Of those, the ones that failed or timed out.
    pub failed_last_day: u64,
    /// `failed_last_day / finished_last_day` (0 when nothing finished).
    pub failure_rate_last_day: f64,
    /// The next fires across every active schedule, earliest first (at most five).
    #[serde(default)]
    pub next_fires: Vec<NextFire>,
}

/// A schedule's next fire, inside [`StatsView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NextFire {
    /// When it fires.
    pub at: DateTime<Utc>,
    /// The schedule.
    pub schedule_id: Uuid,
    /// The pipeline it runs.
    pub pipeline_id: Uuid,
    /// That pipeline's name (absent if the pipelines read model lacks it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_name: Option<String>,
}

/// `plugin.stats`: how a plugin has run, from the runs read model (every run whose
/// pipeline definition has a step with this plugin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PluginStatsView {
    /// The plugin.
    pub plugin_id: Uuid,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its lifecycle state (`active`, `deprecated`, `disabled`).
    pub state: String,
    /// Runs that used it, in every state.
    pub runs_total: u64,
    /// Runs that used it, by run state, each with the average duration of its runs.
    pub runs: BTreeMap<String, RunStateStats>,
    /// Average duration (request to end) of the finished runs that used it, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_duration_ms: Option<u64>,
    /// Of the finished runs, the share that failed or timed out (0 when none finished).
    pub failure_rate: f64,
    /// When the last run that used it was requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_requested_at: Option<DateTime<Utc>>,
}

/// Runs in one state, inside [`PluginStatsView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunStateStats {
    /// How many.
    pub count: u64,
    /// Their average duration (request to end) in ms; finished states only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_duration_ms: Option<u64>,
}

/// Progress of a projection rebuild, inside [`ProjectionStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RebuildStatus {
    /// `requested`, `running`, `done` or `failed`. A rebuild whose leader stopped stays
    /// `running` until the next leader restarts it (its `error` then says so).
    pub state: String,
    /// The generation being built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// Events replayed so far.
    pub processed: u64,
    /// Events in the log when the rebuild started (the progress target).
    pub target: u64,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// When the replay started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished (swapped in, or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Replay speed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_per_second: Option<f64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `projection.list` item: where a projection stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProjectionStatus {
    /// Projection name (`plugins`, `pipelines`, `runs`, `schedules`, `audit`).
    pub name: String,
    /// The table generation being served (grows with every rebuild).
    pub generation: u32,
    /// Global position of the last event applied.
    pub position: u64,
    /// Events committed to the log but not applied yet (capped at 1,000,000).
    pub lag_events: u64,
    /// Age of the oldest event not applied yet, in milliseconds (0 when caught up).
    pub lag_ms: u64,
    /// Events applied by this generation.
    pub events_applied: u64,
    /// When the checkpoint last moved.
    pub updated_at: DateTime<Utc>,
    /// The latest rebuild, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<RebuildStatus>,
}
