//! Pipeline files: a pipeline (and optionally its schedules) in YAML, e.g.
//!
//! ```yaml
//! name: demo-generate          # unique; a-z, 0-9, '-', '_'
//! owner: data-team
//! description: Generated records into a JSONL file
//! tags: [demo]
//! max_active_runs: 1           # optional, default 1
//! run_timeout_seconds: 600     # optional, default 3600
//! retry:                       # optional
//!   max_attempts: 3
//!   initial_backoff_seconds: 10
//! steps:                       # one extractor, any transformers, one loader
//!   - plugin: generator@1.0.0
//!     config: {records: 1000}
//!   - plugin: discard@1.0.0
//! schedules:                   # optional; created with the pipeline (`flexctl apply`
//!                              # makes the pipeline's schedules exactly these)
//!   - cron: "*/5 * * * *"
//!     timezone: Europe/Berlin
//!     overlap: skip
//! ```
//!
//! Errors, found here or by the command service, name the file, line and column: a
//! value's, an unknown key's own, a missing key's mapping's key (see [`crate::yaml`]).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use flexcore_contracts::model::{OverlapPolicy, RetryPolicy, ScheduleSpec, StepSpec};
use flexcore_contracts::values::{Label, PipelineName};
use flexcore_contracts::ErrorBody;
use serde::{Deserialize, Serialize};

use crate::yaml::{self, Document};

/// A pipeline file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Unique name.
    pub name: PipelineName,
    /// Owning team or person.
    pub owner: Label,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Labels.
    #[serde(default)]
    pub tags: Vec<Label>,
    /// The steps, extractor first and loader last.
    pub steps: Vec<StepSpec>,
    /// Runs at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_runs: Option<u32>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Run timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_timeout_seconds: Option<u64>,
    /// Schedules created with the pipeline.
    #[serde(default, skip_serializing)]
    pub schedules: Vec<ScheduleEntry>,
}

/// A schedule in a pipeline file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEntry {
    /// 5- or 6-field cron expression.
    pub cron: String,
    /// IANA time zone (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Overlap policy (default skip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<OverlapPolicy>,
    /// Catch-up window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup_window_seconds: Option<u64>,
    /// Catch-up cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup_cap: Option<u32>,
    /// Jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_seconds: Option<u64>,
    /// First instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<DateTime<Utc>>,
    /// Last instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<DateTime<Utc>>,
    /// Created paused.
    #[serde(default)]
    pub paused: bool,
}

impl ScheduleEntry {
    /// The spec with defaults filled in, as the command service will see it.
    pub fn spec(&self) -> anyhow::Result<ScheduleSpec> {
        let mut value = serde_json::to_value(self)?;
        if let Some(map) = value.as_object_mut() {
            map.remove("paused");
        }
        Ok(serde_json::from_value(value)?)
    }
}

/// A loaded file: its path, parsed document and typed content.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Where it came from.
    pub path: PathBuf,
    /// The document with line positions.
    pub document: Document,
    /// The pipeline.
    pub pipeline: PipelineFile,
}

impl Loaded {
    /// `file:line:column: message` for an error at `path` (a contracts field path).
    pub fn error_at(&self, path: &str, message: &str) -> anyhow::Error {
        match self.document.position(path) {
            Some(p) => anyhow::anyhow!("{}:{}:{}: {message}", self.path.display(), p.line, p.column),
            None => anyhow::anyhow!("{}: {message}", self.path.display()),
        }
    }

    /// Explains a command refusal about this file, pointing at the line it concerns.
    /// `prefix` is where the command body sits in the file (`""` for the pipeline,
    /// `schedules[1]` for a schedule).
    pub fn refusal(&self, prefix: &str, error: &ErrorBody) -> anyhow::Error {
        let path = error.details.path.as_deref().map(path_of).unwrap_or_default();
        let full = match (prefix.is_empty(), path.is_empty()) {
            (true, _) => path,
            (false, true) => prefix.to_owned(),
            (false, false) => format!("{prefix}.{path}"),
        };
        self.error_at(&full, &format!("{} ({})", error.message, error.code))
    }
}

/// The file path (`steps[0].config.db`) of a refusal's JSON pointer (`/steps/0/config/db`).
fn path_of(pointer: &str) -> String {
    let mut path = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        match segment.parse::<usize>() {
            Ok(i) => path.push_str(&format!("[{i}]")),
            Err(_) if path.is_empty() => path.push_str(&segment),
            Err(_) => path.push_str(&format!(".{segment}")),
        }
    }
    path
}

/// The path of the key an "unknown field `KEY`" error is about (serde names the mapping
/// holding it, or the key itself), so the error points at the key, not its value.
fn unknown_key(at: &str, message: &str) -> Option<String> {
    let (_, rest) = message.split_once("unknown field `")?;
    let (key, _) = rest.split_once('`')?;
    let at = at.trim_start_matches('.');
    Some(if at == key || at.ends_with(&format!(".{key}")) {
        at.to_owned()
    } else if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    })
}

/// Reads, parses and checks a pipeline file. Every error names the line.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    parse(path, &text)
}

/// [`load`] from text.
pub fn parse(path: &Path, text: &str) -> anyhow::Result<Loaded> {
    let document = yaml::parse(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if !document.value.is_object() {
        anyhow::bail!(
            "{}: a pipeline file is a YAML mapping with name, owner and steps (see examples/)",
            path.display()
        );
    }
    let pipeline = serde_path_to_error::deserialize::<_, PipelineFile>(document.value.clone()).map_err(|e| {
        let at = e.path().to_string();
        let message = e.into_inner().to_string();
        let message = if at == "." { message } else { format!("{at}: {message}") };
        let position = match unknown_key(&at, &message) {
            Some(key) => document.key_position(&key),
            None => document.position(&at),
        };
        match position {
            Some(p) => anyhow::anyhow!("{}:{}:{}: {message}", path.display(), p.line, p.column),
            None => anyhow::anyhow!("{}: {message}", path.display()),
        }
    })?;
    let loaded = Loaded {
        path: path.to_owned(),
        document,
        pipeline,
    };
    for (i, schedule) in loaded.pipeline.schedules.iter().enumerate() {
        let spec = schedule.spec()?;
        if let Err(e) = flexcore_cron::Calendar::new(&spec) {
            return Err(loaded.error_at(&format!("schedules[{i}].{}", e.field()), &e.to_string()));
        }
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {

    use super::*;

    fn err(text: &str) -> String {
        parse(Path::new("p.yaml"), text).unwrap_err().to_string()
    }

    const GOOD: &str = "\
name: demo
owner: team
steps:
  - plugin: generator@1.0.0
    config: {records: 10}
  - plugin: discard@1.0.0
schedules:
  - cron: '*/5 * * * *'
    timezone: Europe/Berlin
";

    #[test]
    fn a_good_file_loads_with_its_schedules() {
        let loaded = parse(Path::new("p.yaml"), GOOD).unwrap();
        assert_eq!(loaded.pipeline.name.as_str(), "demo");
        assert_eq!(loaded.pipeline.steps.len(), 2);
        assert_eq!(loaded.pipeline.schedules[0].spec().unwrap().timezone, "Europe/Berlin");
        let body = serde_json::to_value(&loaded.pipeline).unwrap();
        assert!(
            body.get("schedules").is_none(),
            "schedules are separate commands: {body}"
        );
    }

    #[test]
    fn structural_errors_name_the_line_and_field() {
        let e = err("name: demo\nowner: team\nsteps:\n  - plugin: generator@1.0.0\n    confg: {}\n");
        assert!(
            e.starts_with("p.yaml:5:") && e.contains("steps[0]") && e.contains("confg"),
            "{e}"
        );
        let e = err("name: Not Valid!\nowner: team\nsteps: []\n");
        assert!(e.starts_with("p.yaml:1:7: name:"), "{e}");
        let e = err("owner: team\nsteps: []\n");
        assert!(e.contains("missing field `name`"), "{e}");
        let e = err("- a\n- b\n");
        assert!(e.contains("YAML mapping"), "{e}");
    }

    #[test]
    fn bad_schedules_are_refused_before_anything_is_sent() {
        let e = err(&GOOD.replace("Europe/Berlin", "Mars/Olympus"));
        assert!(e.starts_with("p.yaml:9:"), "{e}");
        let e = err(&GOOD.replace("*/5 * * * *", "every five minutes"));
        assert!(e.starts_with("p.yaml:8:"), "{e}");
    }

    /// The service's refusals land on the line they are about, not on the first line
    /// (a block mapping's start is the `:` of its first key) or the next one.
    #[test]
    fn refusals_land_on_the_line_they_are_about() {
        let text = "\
name: demo
owner: team
steps:
  - plugin: generatr@1.0.0
    config:
      records: 10
      recrods: 5
  - plugin: discard@1.0.0
";
        let loaded = parse(Path::new("p.yaml"), text).unwrap();
        let at = |reason, pointer: &str| {
            let error = ErrorBody::at(reason, pointer, "bad");
            loaded.refusal("", &error).to_string()
        };
        use flexcore_contracts::ErrorReason::{ConfigInvalid, NotFound};
        assert!(
            at(NotFound, "/steps/0/plugin").starts_with("p.yaml:4:13:"),
            "plugin typo"
        );
        assert!(
            at(ConfigInvalid, "/steps/0/config/recrods").starts_with("p.yaml:7:"),
            "unknown key"
        );
        assert!(
            at(ConfigInvalid, "/steps/1/config").starts_with("p.yaml:8:5:"),
            "no config: its step"
        );
        assert!(
            at(ConfigInvalid, "/steps/0/config").starts_with("p.yaml:5:5:"),
            "the config: its key"
        );
        assert!(at(ConfigInvalid, "").starts_with("p.yaml:1:1:"));
    }

    #[test]
    fn unknown_keys_are_refused_at_their_own_line() {
        let e = err("name: demo\nowner: team\ndescripton: x\nsteps: []\n");
        assert!(e.starts_with("p.yaml:3:1:") && e.contains("descripton"), "{e}");
        let e = err(&GOOD.replace(
            "    timezone: Europe/Berlin\n",
            "    timezone: Europe/Berlin\n    jiter: 5\n",
        ));
        assert!(e.starts_with("p.yaml:10:5:") && e.contains("jiter"), "{e}");
    }

    #[test]
    fn refusals_point_at_the_step_config_or_field() {
        let loaded = parse(Path::new("p.yaml"), GOOD).unwrap();
        let refusal = |pointer: &str| {
            let error = ErrorBody::at(flexcore_contracts::ErrorReason::ConfigInvalid, pointer, "bad");
            loaded.refusal("", &error).to_string()
        };
        assert!(refusal("/steps/0/config/records").starts_with("p.yaml:5:"));
        assert!(refusal("/steps/1").starts_with("p.yaml:6:"));
        assert!(refusal("/steps").starts_with("p.yaml:3:"), "the `steps:` key");
        let error = ErrorBody::at(flexcore_contracts::ErrorReason::InvalidValue, "/timezone", "tz");
        assert!(loaded
            .refusal("schedules[0]", &error)
            .to_string()
            .starts_with("p.yaml:9:"));
    }
}
