//! Schedule event payloads.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::ScheduleSpec;

/// A schedule was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScheduleCreated {
    /// Id.
    pub schedule_id: Uuid,
    /// The pipeline it runs.
    pub pipeline_id: Uuid,
    /// Timing and policies.
    pub spec: ScheduleSpec,
    /// Created paused.
    pub paused: bool,
}

/// A schedule's timing or policies changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScheduleUpdated {
    /// The full spec after the update.
    pub spec: ScheduleSpec,
}

/// The schedule was paused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SchedulePaused {
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The schedule was resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScheduleResumed {}

/// The schedule was deleted (final).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScheduleDeleted {}

/// A slot was not fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScheduleSlotSkipped {
    /// The slot.
    pub slot: DateTime<Utc>,
    /// Why.
    pub reason: String,
}

/// Slots fell outside the catch-up window or cap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScheduleSlotsMissed {
    /// The slots.
    pub slots: Vec<DateTime<Utc>>,
}
