//! Schedule commands.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{OverlapPolicy, ScheduleSpec};
use crate::rules::{MAX_CATCHUP_CAP, MAX_JITTER_SECONDS, MAX_MISSED_SLOTS, MAX_REASON_CHARS};
use crate::values::Label;

/// `schedule.create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// Id to use; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<Uuid>,
    /// The pipeline to run.
    pub pipeline_id: Uuid,
    /// Cron expression, 5 fields (minute precision) or 6 (leading seconds field).
    #[schemars(schema_with = "crate::model::cron_schema")]
    pub cron: String,
    /// IANA time zone (default `UTC`).
    #[serde(default = "utc")]
    #[schemars(schema_with = "crate::model::timezone_schema")]
    pub timezone: String,
    /// Overlap policy (default `skip`).
    #[serde(default)]
    pub overlap: OverlapPolicy,
    /// Catch-up window in seconds (default 3600).
    #[serde(default = "default_catchup_window")]
    pub catchup_window_seconds: u64,
    /// Catch-up cap (default 1, at most 1000).
    #[serde(default = "one")]
    #[schemars(range(max = MAX_CATCHUP_CAP))]
    pub catchup_cap: u32,
    /// Jitter in seconds (default 0, at most 86,400).
    #[serde(default)]
    #[schemars(range(max = MAX_JITTER_SECONDS))]
    pub jitter_seconds: u64,
    /// No slot before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<DateTime<Utc>>,
    /// No slot after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<DateTime<Utc>>,
    /// Create it paused.
    #[serde(default)]
    pub paused: bool,
}

fn utc() -> String {
    "UTC".to_owned()
}
fn default_catchup_window() -> u64 {
    3600
}
fn one() -> u32 {
    1
}

impl CreateSchedule {
    /// The timing and policies of the new schedule.
    pub fn spec(&self) -> ScheduleSpec {
        ScheduleSpec {
            cron: self.cron.clone(),
            timezone: self.timezone.clone(),
            overlap: self.overlap,
            catchup_window_seconds: self.catchup_window_seconds,
            catchup_cap: self.catchup_cap,
            jitter_seconds: self.jitter_seconds,
            start_at: self.start_at,
            end_at: self.end_at,
        }
    }
}

/// `schedule.update`: absent fields keep their value; at least one must be given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("allOf" = [{
    "description": "give at least one of cron, timezone, overlap, catchup_window_seconds, catchup_cap, jitter_seconds, start_at, end_at",
    "anyOf": [
        {"required": ["cron"], "properties": {"cron": {"not": {"type": "null"}}}},
        {"required": ["timezone"], "properties": {"timezone": {"not": {"type": "null"}}}},
        {"required": ["overlap"], "properties": {"overlap": {"not": {"type": "null"}}}},
        {"required": ["catchup_window_seconds"], "properties": {"catchup_window_seconds": {"not": {"type": "null"}}}},
        {"required": ["catchup_cap"], "properties": {"catchup_cap": {"not": {"type": "null"}}}},
        {"required": ["jitter_seconds"], "properties": {"jitter_seconds": {"not": {"type": "null"}}}},
        {"required": ["start_at"], "properties": {"start_at": {"not": {"type": "null"}}}},
        {"required": ["end_at"], "properties": {"end_at": {"not": {"type": "null"}}}}
    ]
}]))]
pub struct UpdateSchedule {
    /// The schedule.
    pub schedule_id: Uuid,
    /// New cron expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::model::cron_schema_nullable")]
    pub cron: Option<String>,
    /// New time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::model::timezone_schema_nullable")]
    pub timezone: Option<String>,
    /// New overlap policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<OverlapPolicy>,
    /// New catch-up window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup_window_seconds: Option<u64>,
    /// New catch-up cap (at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_CATCHUP_CAP))]
    pub catchup_cap: Option<u32>,
    /// New jitter (at most 86,400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_JITTER_SECONDS))]
    pub jitter_seconds: Option<u64>,
    /// New start bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<DateTime<Utc>>,
    /// New end bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<DateTime<Utc>>,
}

/// `schedule.pause`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseSchedule {
    /// The schedule.
    pub schedule_id: Uuid,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_CHARS))]
    pub reason: Option<String>,
}

/// `schedule.resume`: slots missed while paused are not caught up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeSchedule {
    /// The schedule.
    pub schedule_id: Uuid,
}

/// `schedule.delete`: final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteSchedule {
    /// The schedule.
    pub schedule_id: Uuid,
}

/// `schedule.skip_slot`: records that a slot was not fired (overlap policy, paused pipeline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SkipSlot {
    /// The schedule.
    pub schedule_id: Uuid,
    /// The slot.
    pub slot: DateTime<Utc>,
    /// Why (`overlap`, `pipeline_paused`, …).
    pub reason: Label,
}

/// `schedule.miss_slots`: records slots that fell outside the catch-up window or cap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MissSlots {
    /// The schedule.
    pub schedule_id: Uuid,
    /// The missed slots (1 to 10,000).
    #[schemars(length(min = 1, max = MAX_MISSED_SLOTS))]
    pub slots: Vec<DateTime<Utc>>,
}
