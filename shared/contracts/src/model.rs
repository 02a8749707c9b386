//! Building blocks shared by commands and events: plugin kinds, limits and grants,
//! pipeline steps and policies, run triggers and errors, schedule policies.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::opaque::StepConfig;
use crate::rules::{self, MAX_ATTEMPTS, MAX_CATCHUP_CAP, MAX_GRANTS, MAX_JITTER_SECONDS, MAX_PATH_CHARS};
use crate::values::{Digest, PluginRef};

/// What a plugin does in a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    /// Reads a source and writes Singer messages (a tap).
    Extractor,
    /// Reads Singer messages and writes Singer messages.
    Transformer,
    /// Reads Singer messages and persists them (a target).
    Loader,
}

impl PluginKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Extractor => "extractor",
            Self::Transformer => "transformer",
            Self::Loader => "loader",
        }
    }
}

/// How a plugin is executed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginRuntime {
    /// A WASI command module run in the wasmtime sandbox (the default).
    #[default]
    Wasm,
    /// A native executable run as a child process: opt-in and NOT sandboxed.
    Process,
}

/// Hard resource limits of one plugin execution. Unset fields take the runner's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// Linear memory cap in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub memory_bytes: Option<u64>,
    /// Fuel (instruction budget); unlimited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub fuel: Option<u64>,
    /// Wall-clock limit of one execution, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<u64>,
    /// Cap on the bytes the plugin may write to stdout (and, separately, stderr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_output_bytes: Option<u64>,
}

/// Access granted to a preopened directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DirAccess {
    /// Read only.
    ReadOnly,
    /// Read and write.
    ReadWrite,
}

/// A host directory made visible to the plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// Directory on the runner host.
    #[schemars(length(min = 1, max = MAX_PATH_CHARS))]
    pub host_path: String,
    /// Path the plugin sees it at.
    #[schemars(length(min = 1, max = MAX_PATH_CHARS))]
    pub guest_path: String,
    /// Read-only or read-write.
    pub access: DirAccess,
}

/// Capabilities a plugin may use. Everything is denied by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Hosts (`host:port`) the plugin may connect to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_GRANTS), inner(length(min = 1, max = 255)))]
    pub allowed_hosts: Vec<String>,
    /// Environment variable names passed through from the runner.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_GRANTS), inner(length(min = 1, max = 255)))]
    pub env: Vec<String>,
    /// Preopened directories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_GRANTS))]
    pub dirs: Vec<DirGrant>,
}

/// A pipeline step as written by the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// The plugin version to run: `name@version`.
    pub plugin: PluginRef,
    /// Step configuration, validated against the plugin's config schema. Secrets appear
    /// only as `${secret:NAME}` references. Kept exactly as written.
    #[serde(default)]
    pub config: StepConfig,
}

/// A step as accepted: the plugin resolved and pinned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PinnedStep {
    /// `name@version` as written.
    pub plugin: PluginRef,
    /// The plugin's id.
    pub plugin_id: Uuid,
    /// The plugin's kind.
    pub kind: PluginKind,
    /// The plugin's runtime.
    pub runtime: PluginRuntime,
    /// The module digest (wasm plugins), pinned so a run executes exactly these bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_digest: Option<Digest>,
    /// Step configuration (secret references unresolved), exactly as written.
    pub config: StepConfig,
}

/// Retry policy of a pipeline's runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, including the first (1 = never retry).
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = MAX_ATTEMPTS))]
    pub max_attempts: u32,
    /// Back-off before the first retry, in seconds.
    #[serde(default = "default_initial_backoff")]
    #[schemars(range(min = 1))]
    pub initial_backoff_seconds: u64,
    /// Upper bound of every back-off, in seconds (a smaller initial back-off is capped by it).
    #[serde(default = "default_max_backoff")]
    #[schemars(range(min = 1))]
    pub max_backoff_seconds: u64,
    /// Growth factor of the back-off between attempts (at least 1).
    #[serde(default = "default_multiplier")]
    #[schemars(range(min = 1))]
    pub multiplier: f64,
}

fn default_max_attempts() -> u32 {
    3
}
fn default_initial_backoff() -> u64 {
    10
}
fn default_max_backoff() -> u64 {
    600
}
fn default_multiplier() -> f64 {
    2.0
}

impl RetryPolicy {
    /// The back-off after attempt `failed_attempt` (1-based) of run `run_id` failed:
    /// `initial × multiplier^(failed_attempt − 1)` with ±20 % jitter, capped at the maximum.
    /// The jitter is derived from the run and attempt, so every scheduler replica computes
    /// the same delay and the retry time follows from the failure event alone.
    pub fn backoff(&self, failed_attempt: u32, run_id: Uuid) -> std::time::Duration {
        let exponent = i32::try_from(failed_attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = self.initial_backoff_seconds as f64 * self.multiplier.max(1.0).powi(exponent);
        let key = Uuid::new_v5(&run_id, &failed_attempt.to_be_bytes());
        let unit = (key.as_u128() >> 64) as f64 / u64::MAX as f64;
        let jittered = base * (0.8 + 0.4 * unit);
        std::time::Duration::from_secs_f64(jittered.min(self.max_backoff_seconds as f64).max(0.0))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            initial_backoff_seconds: default_initial_backoff(),
            max_backoff_seconds: default_max_backoff(),
            multiplier: default_multiplier(),
        }
    }
}

/// A pipeline's executable definition; a new version is kept on every update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineDefinition {
    /// One extractor, zero or more transformers, one loader, in that order.
    pub steps: Vec<PinnedStep>,
    /// Most runs that may be active at once.
    pub max_active_runs: u32,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Wall-clock limit of a run, in seconds.
    pub run_timeout_seconds: u64,
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    /// An operator (flexctl).
    Manual,
    /// A program through the API.
    Api,
    /// A schedule's slot.
    Schedule,
    /// A past slot requested by `flexctl schedule backfill`.
    Backfill,
}

/// Why a run attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunError {
    /// Machine-readable reason, e.g. `trap`, `timeout`, `protocol`.
    #[schemars(length(min = 1, max = 100))]
    pub code: String,
    /// Human-readable message (at most [`RunError::MAX_MESSAGE_CHARS`] characters).
    #[schemars(length(max = 8000))]
    pub message: String,
    /// The step (index) that failed, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
}

impl RunError {
    /// Longest message, in characters.
    pub const MAX_MESSAGE_CHARS: usize = 8000;

    /// An error whose message is cut to [`Self::MAX_MESSAGE_CHARS`] characters, U+0000
    /// (which no command may carry) replaced by U+FFFD: a plugin's own words may hold it.
    pub fn new(code: impl Into<String>, message: &str, step: Option<u32>) -> Self {
        let mut message: String = message
            .chars()
            .take(Self::MAX_MESSAGE_CHARS)
            .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
            .collect();
        if message.chars().count() == Self::MAX_MESSAGE_CHARS {
            message.pop();
            message.push('…');
        }
        Self {
            code: code.into(),
            message,
            step,
        }
    }
}

/// Why a run attempt was timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutReason {
    /// The runner stopped heartbeating: the attempt may be retried.
    LeaseExpired,
    /// The run exceeded its pipeline's run timeout: final.
    RunTimeout,
}

/// Records read per stream.
pub type StreamCounters = BTreeMap<String, u64>;

/// What to do with a slot that comes due while an earlier run is still active.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Skip the slot (recorded as `schedule.slot_skipped`).
    #[default]
    Skip,
    /// Keep one pending slot and start it when the active run ends.
    BufferOne,
    /// Start it anyway, up to the pipeline's max active runs.
    Allow,
}

/// A schedule's timing and policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Cron expression, 5 fields (minute precision) or 6 (leading seconds field).
    #[schemars(schema_with = "cron_schema")]
    pub cron: String,
    /// IANA time zone the cron is evaluated in (`Europe/Berlin`). Slots in a skipped
    /// (spring-forward) hour fire once at the transition; a repeated hour fires once.
    #[serde(default = "default_timezone")]
    #[schemars(schema_with = "timezone_schema")]
    pub timezone: String,
    /// Overlap policy.
    #[serde(default)]
    pub overlap: OverlapPolicy,
    /// How far back slots missed while no scheduler ran are still fired, in seconds.
    #[serde(default = "default_catchup_window")]
    pub catchup_window_seconds: u64,
    /// Most missed slots fired on catch-up; older ones are recorded as missed.
    #[serde(default = "default_catchup_cap")]
    #[schemars(range(max = MAX_CATCHUP_CAP))]
    pub catchup_cap: u32,
    /// Random delay up to this many seconds added to each fire.
    #[serde(default)]
    #[schemars(range(max = MAX_JITTER_SECONDS))]
    pub jitter_seconds: u64,
    /// No slot before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<DateTime<Utc>>,
    /// No slot after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<DateTime<Utc>>,
}

/// The schema of a cron expression (see [`rules::cron_pattern`]), `null` allowed when
/// `nullable`.
fn cron_schema_of(nullable: bool) -> schemars::Schema {
    let mut schema = schemars::json_schema!({
        "description": "A cron expression: 5 fields (minute hour day-of-month month day-of-week) or 6 (a leading seconds field), separated by spaces. A field is *, ? (day fields only) or a comma-separated list of */step, numbers, ascending ranges a-b (each optionally /step), month and weekday names (JAN, MON, any case), L and nW in the day of the month, nL (n 0-6) and n#k in the day of the week. A weekday range does not end in SUN (write 7).",
        "maxLength": rules::MAX_CRON_CHARS,
    });
    schema.insert(
        "type".into(),
        if nullable {
            serde_json::json!(["string", "null"])
        } else {
            "string".into()
        },
    );
    schema.insert("pattern".into(), rules::cron_regex().into());
    schema
}

/// The schema of a cron expression.
pub fn cron_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    cron_schema_of(false)
}

/// The schema of an optional cron expression.
pub fn cron_schema_nullable(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    cron_schema_of(true)
}

/// The schema of an IANA time zone name: one of the names this build knows.
fn timezone_schema_of(nullable: bool) -> schemars::Schema {
    let mut names: Vec<serde_json::Value> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name().into()).collect();
    if nullable {
        names.push(serde_json::Value::Null);
    }
    let mut schema = schemars::json_schema!({
        "description": "An IANA time zone name, e.g. Europe/Berlin or UTC (case-sensitive).",
    });
    schema.insert("enum".into(), names.into());
    schema
}

/// The schema of a time zone name.
pub fn timezone_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    timezone_schema_of(false)
}

/// The schema of an optional time zone name.
pub fn timezone_schema_nullable(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    timezone_schema_of(true)
}

fn default_timezone() -> String {
    "UTC".to_owned()
}
fn default_catchup_window() -> u64 {
    3600
}
fn default_catchup_cap() -> u32 {
    1
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_jitter_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff_seconds: 10,
            max_backoff_seconds: 60,
            multiplier: 2.0,
        };
        let run = Uuid::from_u128(42);
        for (attempt, base) in [(1u32, 10.0f64), (2, 20.0), (3, 40.0)] {
            let d = policy.backoff(attempt, run).as_secs_f64();
            assert!(d >= base * 0.8 && d <= base * 1.2, "attempt {attempt}: {d}");
            assert_eq!(policy.backoff(attempt, run), policy.backoff(attempt, run));
        }
        assert!(policy.backoff(4, run).as_secs_f64() <= 60.0);
        assert!(policy.backoff(30, run).as_secs_f64() <= 60.0);
        assert_ne!(policy.backoff(1, run), policy.backoff(1, Uuid::from_u128(43)));
    }
}

#[cfg(test)]
mod tests {
    use super::RunError;

    #[test]
    fn run_errors_carry_no_nul_and_are_cut_to_the_limit() {
        let e = RunError::new("trap", "a\0b", Some(1));
        assert_eq!(e.message, "a\u{FFFD}b");
        let long = "x".repeat(RunError::MAX_MESSAGE_CHARS + 5);
        let e = RunError::new("trap", &long, None);
        assert_eq!(e.message.chars().count(), RunError::MAX_MESSAGE_CHARS);
        assert!(e.message.ends_with('…'));
    }
}
