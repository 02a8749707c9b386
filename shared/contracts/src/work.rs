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
    /// The correlation id of the request that started the run: the runner's commands
    /// carry it, so every event of the run shares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
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

/// A runner's sign of life for the attempt it holds (`flexcore.sys.run.<run_id>.heartbeat`),
/// sent every third of its lease; the scheduler times out attempts whose heartbeats stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunHeartbeat {
    /// The run.
    pub run_id: Uuid,
    /// The attempt held.
    pub attempt: u32,
    /// The runner instance.
    pub runner_id: String,
}

/// A scheduler replica's announcement on `flexcore.sys.scheduler.presence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulerPresence {
    /// The replica's instance id.
    pub instance: String,
    /// False in the replica's last announcement, sent when it stops.
    pub alive: bool,
}

/// A runner's announcement on `flexcore.sys.runner.presence`, every two seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunnerPresence {
    /// The runner's id (as in `run.claimed`).
    pub runner_id: String,
    /// Attempts it runs at once.
    pub slots: u32,
    /// Slots busy now.
    pub busy: u32,
    /// False in the runner's last announcement, sent when it stops.
    pub alive: bool,
}
