//! Logs and Singer metrics, written to stderr (stdout carries only messages).

use std::fmt::Display;
use std::io::Write;

use serde::Serialize;

/// Log severity, spelled as Singer taps (Python logging) spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Diagnostic detail.
    Debug,
    /// Normal progress.
    Info,
    /// Something odd that did not stop the plugin.
    Warning,
    /// A failure.
    Error,
}

impl Level {
    /// The level as printed at the start of the line.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        }
    }
}

/// Writes `LEVEL message` to stderr. Errors writing stderr are ignored: there is no
/// better place to report them.
pub fn log(level: Level, message: impl Display) {
    let _ = writeln!(std::io::stderr().lock(), "{} {message}", level.as_str());
}

#[derive(Serialize)]
struct Metric<'a, V: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    metric: &'a str,
    value: V,
    tags: serde_json::Map<String, serde_json::Value>,
}

fn metric_line<V: Serialize>(kind: &'static str, metric: &str, value: V, tags: &[(&str, &str)]) -> String {
    let tags = tags
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
        .collect();
    // Serialising plain strings and numbers cannot fail.
    let json = serde_json::to_string(&Metric {
        kind,
        metric,
        value,
        tags,
    })
    .unwrap_or_default();
    format!("METRIC: {json}")
}

/// Writes a Singer counter metric: `INFO METRIC: {"type":"counter","metric":…,"value":…,"tags":{…}}`.
pub fn metric_counter(metric: &str, value: u64, tags: &[(&str, &str)]) {
    log(Level::Info, metric_line("counter", metric, value, tags));
}

/// Writes a Singer timer metric (`value` in seconds).
pub fn metric_timer(metric: &str, seconds: f64, tags: &[(&str, &str)]) {
    log(Level::Info, metric_line("timer", metric, seconds, tags));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lines_follow_singer() {
        assert_eq!(
            metric_line("counter", "record_count", 12, &[("endpoint", "users")]),
            r#"METRIC: {"type":"counter","metric":"record_count","value":12,"tags":{"endpoint":"users"}}"#
        );
        assert_eq!(
            metric_line("timer", "t", 0.5, &[]),
            r#"METRIC: {"type":"timer","metric":"t","value":0.5,"tags":{}}"#
        );
    }
}
