//! Pipeline commands.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{RetryPolicy, StepSpec};
use crate::opaque::OpaqueJson;
use crate::rules::{MAX_ACTIVE_RUNS, MAX_DESCRIPTION_CHARS, MAX_REASON_CHARS, MAX_STEPS, MAX_TAGS, MIN_STEPS};
use crate::values::{Label, PipelineName};

/// `pipeline.create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePipeline {
    /// Id to use; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<Uuid>,
    /// Unique name among non-archived pipelines.
    pub name: PipelineName,
    /// Owning person or team.
    pub owner: Label,
    /// Free-form description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DESCRIPTION_CHARS))]
    pub description: Option<String>,
    /// Tags for filtering (at most 50, no repeats).
    #[serde(default)]
    #[schemars(length(max = MAX_TAGS), extend("uniqueItems" = true))]
    pub tags: Vec<Label>,
    /// One extractor, zero or more transformers, one loader, in that order (2-32 steps).
    #[schemars(length(min = MIN_STEPS, max = MAX_STEPS))]
    pub steps: Vec<StepSpec>,
    /// Most runs active at once (default 1, at most 1000).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = MAX_ACTIVE_RUNS))]
    pub max_active_runs: u32,
    /// Retry policy (default: 3 attempts, 10 s doubling to 600 s).
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Wall-clock limit of a run in seconds (default 3600).
    #[serde(default = "default_run_timeout")]
    #[schemars(range(min = 1))]
    pub run_timeout_seconds: u64,
}

fn one() -> u32 {
    1
}
fn default_run_timeout() -> u64 {
    3600
}

/// `pipeline.update`: changes the definition (a new definition version) and/or metadata.
/// Absent fields keep their value; at least one must be given. The name cannot change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("allOf" = [{
    "description": "give at least one of owner, description, tags, steps, max_active_runs, retry, run_timeout_seconds",
    "anyOf": [
        {"required": ["owner"], "properties": {"owner": {"not": {"type": "null"}}}},
        {"required": ["description"], "properties": {"description": {"not": {"type": "null"}}}},
        {"required": ["tags"], "properties": {"tags": {"not": {"type": "null"}}}},
        {"required": ["steps"], "properties": {"steps": {"not": {"type": "null"}}}},
        {"required": ["max_active_runs"], "properties": {"max_active_runs": {"not": {"type": "null"}}}},
        {"required": ["retry"], "properties": {"retry": {"not": {"type": "null"}}}},
        {"required": ["run_timeout_seconds"], "properties": {"run_timeout_seconds": {"not": {"type": "null"}}}}
    ]
}]))]
pub struct UpdatePipeline {
    /// The pipeline.
    pub pipeline_id: Uuid,
    /// New owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Label>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DESCRIPTION_CHARS))]
    pub description: Option<String>,
    /// New tags (replacing the old ones; at most 50, no repeats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_TAGS), extend("uniqueItems" = true))]
    pub tags: Option<Vec<Label>>,
    /// New steps (2-32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = MIN_STEPS, max = MAX_STEPS))]
    pub steps: Option<Vec<StepSpec>>,
    /// New concurrency limit (1-1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_ACTIVE_RUNS))]
    pub max_active_runs: Option<u32>,
    /// New retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// New run timeout (at least 1 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub run_timeout_seconds: Option<u64>,
}

/// `pipeline.pause`: no new runs start (schedules skip) until resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PausePipeline {
    /// The pipeline.
    pub pipeline_id: Uuid,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_CHARS))]
    pub reason: Option<String>,
}

/// `pipeline.resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumePipeline {
    /// The pipeline.
    pub pipeline_id: Uuid,
}

/// `pipeline.archive`: final; frees the name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchivePipeline {
    /// The pipeline.
    pub pipeline_id: Uuid,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_CHARS))]
    pub reason: Option<String>,
}

/// `pipeline.commit_state`: sets the Singer bookmark the next run resumes from
/// (`null` resets it for a full refresh). Runs commit state through `run.checkpoint`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitPipelineState {
    /// The pipeline.
    pub pipeline_id: Uuid,
    /// The STATE `value` (opaque, kept exactly as written), or `null`.
    pub state: OpaqueJson,
}
