//! Run work items on `FLEXCORE_WORK` (`flexcore.work.run.<run_id>`).
//!
//! The outbox relay publishes one right after relaying a `run.requested` or `run.retried`
//! event, with `Nats-Msg-Id = <run_id>-<attempt>`, so every attempt is offered exactly
//! once to the runners sharing the work queue. The item only names the attempt: the
//! pinned definition is in the run's `run.requested` event, the bookmark in `run.claimed`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One attempt of a run, to be claimed and executed by a runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkItem {
    /// The run.
    pub run_id: Uuid,
    /// The attempt to claim (the fencing token).
    pub attempt: u32,
    /// The run's pipeline.
    pub pipeline_id: Uuid,
}

impl WorkItem {
    /// The de-duplication id of the item.
    pub fn msg_id(&self) -> String {
        format!("{}-{}", self.run_id, self.attempt)
    }
}

/// One line a plugin wrote to stderr during a run (`flexcore.log.run.<run_id>`), with
/// resolved secret values scrubbed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunLogLine {
    /// The run.
    pub run_id: Uuid,
    /// The attempt that logged it.
    pub attempt: u32,
    /// The step (0-based) whose plugin logged it.
    pub step: usize,
    /// `name@version` of the plugin.
    pub plugin: String,
    /// The line (at most 4 KiB).
    pub line: String,
    /// When the runner read it.
    pub at: chrono::DateTime<chrono::Utc>,
}
