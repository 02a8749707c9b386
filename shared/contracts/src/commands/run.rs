//! Run commands. Commands of a runner carry the attempt number they act for (the fencing
//! token); a stale attempt's commands are refused with `conflict`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{RunError, RunTrigger, StreamCounters, TimeoutReason};
use crate::opaque::OpaqueJson;
use crate::rules::{MAX_LEASE_SECONDS, MAX_REASON_CHARS, MAX_STREAMS};
use crate::values::Label;

/// `run.request`: pins the pipeline's current definition and plugin digests.
/// `schedule_id` and `scheduled_for` go together, and a run triggered by `schedule` or
/// `backfill` needs both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("allOf" = [
    {
        "description": "scheduled_for needs schedule_id",
        "if": {"required": ["scheduled_for"], "properties": {"scheduled_for": {"type": "string"}}},
        "then": {"required": ["schedule_id"], "properties": {"schedule_id": {"type": "string"}}}
    },
    {
        "description": "schedule_id needs scheduled_for",
        "if": {"required": ["schedule_id"], "properties": {"schedule_id": {"type": "string"}}},
        "then": {"required": ["scheduled_for"], "properties": {"scheduled_for": {"type": "string"}}}
    },
    {
        "description": "a run triggered by schedule or backfill needs schedule_id and scheduled_for",
        "if": {"required": ["trigger"], "properties": {"trigger": {"enum": ["schedule", "backfill"]}}},
        "then": {
            "required": ["schedule_id", "scheduled_for"],
            "properties": {"schedule_id": {"type": "string"}, "scheduled_for": {"type": "string"}}
        }
    }
]))]
pub struct RequestRun {
    /// Id to use (schedulers derive it from the slot); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Uuid>,
    /// The pipeline to run.
    pub pipeline_id: Uuid,
    /// What started it (default `api`).
    #[serde(default = "default_trigger")]
    pub trigger: RunTrigger,
    /// The schedule that fired it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<Uuid>,
    /// The slot it was fired for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<DateTime<Utc>>,
}

fn default_trigger() -> RunTrigger {
    RunTrigger::Api
}

/// `run.claim`: a runner takes the pending attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRun {
    /// The run.
    pub run_id: Uuid,
    /// The pending attempt number.
    #[schemars(range(min = 1))]
    pub attempt: u32,
    /// The runner instance.
    pub runner_id: Label,
    /// Lease length in seconds (1 to 86,400); the runner heartbeats within it.
    #[serde(default = "default_lease")]
    #[schemars(range(min = 1, max = MAX_LEASE_SECONDS))]
    pub lease_seconds: u64,
}

fn default_lease() -> u64 {
    30
}

/// `run.checkpoint`: the loader echoed a STATE; it is committed to the run and to the
/// pipeline's bookmark in one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRun {
    /// The run.
    pub run_id: Uuid,
    /// The claimed attempt.
    #[schemars(range(min = 1))]
    pub attempt: u32,
    /// The STATE `value`, unchanged (kept exactly as written).
    pub state: OpaqueJson,
    /// Records per stream so far in this attempt.
    #[serde(default)]
    #[schemars(extend("maxProperties" = MAX_STREAMS))]
    pub counters: StreamCounters,
}

/// `run.succeed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SucceedRun {
    /// The run.
    pub run_id: Uuid,
    /// The claimed attempt.
    #[schemars(range(min = 1))]
    pub attempt: u32,
    /// Final records per stream.
    #[serde(default)]
    #[schemars(extend("maxProperties" = MAX_STREAMS))]
    pub counters: StreamCounters,
}

/// `run.fail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRun {
    /// The run.
    pub run_id: Uuid,
    /// The claimed attempt.
    #[schemars(range(min = 1))]
    pub attempt: u32,
    /// What went wrong.
    pub error: RunError,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// Records per stream at failure.
    #[serde(default)]
    #[schemars(extend("maxProperties" = MAX_STREAMS))]
    pub counters: StreamCounters,
}

/// `run.retry`: starts the next attempt of a run whose last attempt failed retryably or
/// lost its lease (sent by the scheduler after back-off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRun {
    /// The run.
    pub run_id: Uuid,
    /// The attempt that failed (so two schedulers cannot both retry it).
    #[schemars(range(min = 1))]
    pub failed_attempt: u32,
}

/// `run.cancel`: stops a pending or running run; final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRun {
    /// The run.
    pub run_id: Uuid,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_CHARS))]
    pub reason: Option<String>,
}

/// `run.time_out`: the claimed attempt lost its lease or the run exceeded its timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeOutRun {
    /// The run.
    pub run_id: Uuid,
    /// The attempt that timed out.
    #[schemars(range(min = 1))]
    pub attempt: u32,
    /// Lease expiry (retryable) or run timeout (final).
    pub reason: TimeoutReason,
}
