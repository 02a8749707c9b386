//! Pipeline commands.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{RetryPolicy, StepSpec};
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
    pub description: Option<String>,
    /// Tags for filtering.
    #[serde(default)]
    pub tags: Vec<Label>,
    /// One extractor, zero or more transformers, one loader, in that order.
    pub steps: Vec<StepSpec>,
    /// Most runs active at once (default 1).
    #[serde(default = "one")]
    pub max_active_runs: u32,
    /// Retry policy (default: 3 attempts, 10 s doubling to 600 s).
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Wall-clock limit of a run in seconds (default 3600).
    #[serde(default = "default_run_timeout")]
    pub run_timeout_seconds: u64,
}

fn one() -> u32 {
    1
}
fn default_run_timeout() -> u64 {
    3600
}

/// `pipeline.update`: changes the definition (a new definition version) and/or metadata.
/// Absent fields keep their value. The name cannot change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePipeline {
    /// The pipeline.
    pub pipeline_id: Uuid,
    /// New owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Label>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New tags (replacing the old ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Label>>,
    /// New steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepSpec>>,
    /// New concurrency limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_runs: Option<u32>,
    /// New retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// New run timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    pub reason: Option<String>,
}

/// `pipeline.commit_state`: sets the Singer bookmark the next run resumes from
/// (`null` resets it for a full refresh). Runs commit state through `run.checkpoint`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitPipelineState {
    /// The pipeline.
    pub pipeline_id: Uuid,
    /// The STATE `value` (opaque), or `null`.
    pub state: serde_json::Value,
}
