//! Run event payloads.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::opaque::OpaqueJson;
use uuid::Uuid;

use crate::model::{PipelineDefinition, RunError, RunTrigger, StreamCounters, TimeoutReason};
use crate::values::{Label, PipelineName};

/// A run was requested; the definition (with plugin digests) is pinned here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunRequested {
    /// Id.
    pub run_id: Uuid,
    /// The pipeline.
    pub pipeline_id: Uuid,
    /// The pipeline's name when requested.
    pub pipeline_name: PipelineName,
    /// The pinned definition version.
    pub definition_version: u32,
    /// The pinned definition.
    pub definition: PipelineDefinition,
    /// What started it.
    pub trigger: RunTrigger,
    /// The schedule that fired it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<Uuid>,
    /// The slot it was fired for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<DateTime<Utc>>,
    /// The first attempt's number (1).
    pub attempt: u32,
}

/// A runner claimed the pending attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunClaimed {
    /// The attempt (fencing token).
    pub attempt: u32,
    /// The runner.
    pub runner_id: Label,
    /// Lease length in seconds.
    pub lease_seconds: u64,
    /// The pipeline's bookmark when claimed: the attempt resumes from it.
    pub resume_state: OpaqueJson,
}

/// The loader echoed a STATE; it is now the pipeline's bookmark too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunCheckpointed {
    /// The attempt.
    pub attempt: u32,
    /// The STATE `value`.
    pub state: OpaqueJson,
    /// Records per stream so far in this attempt.
    pub counters: StreamCounters,
}

/// The run succeeded (final).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunSucceeded {
    /// The attempt.
    pub attempt: u32,
    /// Records per stream.
    pub counters: StreamCounters,
}

/// An attempt failed; `final` when no retry will follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunFailed {
    /// The attempt.
    pub attempt: u32,
    /// What went wrong.
    pub error: RunError,
    /// Whether the error was retryable.
    pub retryable: bool,
    /// True when the run is over (not retryable, or attempts exhausted).
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Records per stream at failure.
    pub counters: StreamCounters,
}

/// A new attempt was started after a retryable failure or lease expiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunRetried {
    /// The new attempt's number.
    pub attempt: u32,
    /// The run's pipeline (so the attempt's work item can name it).
    pub pipeline_id: Uuid,
}

/// The run was cancelled (final).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunCancelled {
    /// The attempt current when cancelled.
    pub attempt: u32,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An attempt timed out; `final` when no retry will follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunTimedOut {
    /// The attempt.
    pub attempt: u32,
    /// Lease expiry or run timeout.
    pub reason: TimeoutReason,
    /// True when the run is over.
    #[serde(rename = "final")]
    pub is_final: bool,
}
