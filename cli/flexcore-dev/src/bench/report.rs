//! The benchmark report: figures per phase and their ratio, as text or one JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::record::Machine;
use super::stats::{LatencySummary, PhaseStats};
use super::BenchConfig;
use flexctl::cli::Output;
use flexctl::duration::format_duration;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the report was made (UTC, RFC 3339).
    pub date: String,
    /// The machine the benchmark ran on.
    pub machine: Machine,
    /// Concurrent clients (raw phase: connections).
    pub clients: usize,
    /// Measured window of each phase, in seconds.
    pub duration_seconds: f64,
    /// Warm-up before each window, in seconds.
    pub warmup_seconds: f64,
    /// Phase 1, unless `--raw-only`.
    pub commands: Option<CommandFigures>,
    /// Phase 2, unless `--skip-raw`.
    pub raw: Option<RawFigures>,
    /// Accepted commands/s as a percentage of raw inserts/s, when both ran.
    pub commands_to_raw_percent: Option<f64>,
}

/// Phase 1 figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandFigures {
    /// Commands accepted in the measured window.
    pub accepted: u64,
    /// Accepted commands per second of the window.
    pub per_second: f64,
    /// Latency of every request answered in the window (accepted or refused).
    pub latency: LatencySummary,
    /// Refusals by error code.
    pub rejected: BTreeMap<String, u64>,
    /// Requests without a usable reply, by kind (`timed_out`, `no_responders`, …).
    pub transport_errors: BTreeMap<String, u64>,
}

/// Phase 2 figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RawFigures {
    /// Inserts committed in the measured window.
    pub inserts: u64,
    /// Inserts per second of the window.
    pub per_second: f64,
    /// Latency of the committed inserts.
    pub latency: LatencySummary,
    /// Failed inserts by SQLSTATE or kind.
    pub errors: BTreeMap<String, u64>,
}

impl CommandFigures {
    /// The figures of phase 1's statistics.
    pub fn of(stats: &PhaseStats) -> Self {
        Self {
            accepted: stats.ok,
            per_second: stats.per_second(),
            latency: stats.latency(),
            rejected: stats.rejected.clone(),
            transport_errors: stats.failed.clone(),
        }
    }
}

impl RawFigures {
    /// The figures of phase 2's statistics.
    pub fn of(stats: &PhaseStats) -> Self {
        Self {
            inserts: stats.ok,
            per_second: stats.per_second(),
            latency: stats.latency(),
            errors: stats.failed.clone(),
        }
    }
}

impl Report {
    /// The report of a run of `config` (now, on this machine).
    pub fn new(config: &BenchConfig, commands: Option<&PhaseStats>, raw: Option<&PhaseStats>) -> Self {
        let commands = commands.map(CommandFigures::of);
        let raw = raw.map(RawFigures::of);
        let commands_to_raw_percent = match (&commands, &raw) {
            (Some(c), Some(r)) if r.per_second > 0.0 => Some(100.0 * c.per_second / r.per_second),
            _ => None,
        };
        Self {
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            machine: Machine::detect(),
            clients: config.clients,
            duration_seconds: config.duration.as_secs_f64(),
            warmup_seconds: config.warmup.as_secs_f64(),
            commands,
            raw,
            commands_to_raw_percent,
        }
    }

    /// The compact human-readable report.
    pub fn text(&self) -> String {
        let seconds = |s: f64| format_duration(std::time::Duration::from_secs_f64(s));
        let mut out = format!(
            "flexctl bench commands: {} clients, {} measured after {} warm-up\nmachine   {}\n",
            self.clients,
            seconds(self.duration_seconds),
            seconds(self.warmup_seconds),
            self.machine.describe()
        );
        if let Some(c) = &self.commands {
            out += &phase_line(
                "commands",
                c.per_second,
                &c.latency,
                &format!("{} accepted", c.accepted),
            );
            let errors = c.rejected.iter().chain(&c.transport_errors);
            out += &errors_line(errors);
        }
        if let Some(r) = &self.raw {
            out += &phase_line("raw", r.per_second, &r.latency, &format!("{} inserts", r.inserts));
            out += &errors_line(r.errors.iter());
        }
        if let Some(ratio) = self.commands_to_raw_percent {
            let _ = writeln!(out, "ratio     {ratio:.1} % (accepted commands/s ÷ raw inserts/s)");
        }
        out
    }
}

/// `name  N/s  p50 … p95 … p99 … max …  (count)`.
fn phase_line(name: &str, per_second: f64, l: &LatencySummary, count: &str) -> String {
    format!(
        "{name:<9} {per_second:>8.0} /s   p50 {:.2} ms   p95 {:.2} ms   p99 {:.2} ms   max {:.2} ms   ({count})\n",
        l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms
    )
}

/// `          errors: code n, …` when there are any.
fn errors_line<'a>(errors: impl Iterator<Item = (&'a String, &'a u64)>) -> String {
    let listed = errors.map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>();
    if listed.is_empty() {
        String::new()
    } else {
        format!("          errors: {}\n", listed.join(", "))
    }
}

/// Prints the report to stdout in the chosen format (a closed stdout is an error,
/// which flexctl's main treats as a quiet exit).
pub fn print(report: &Report, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Text => flexctl::write_stdout_raw(report.text().as_bytes()),
        Output::Json => flexctl::write_stdout(&serde_json::to_string(report)?),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::Phases;

    pub(crate) fn config() -> BenchConfig {
        BenchConfig {
            nats: flexctl::nats::Nats::new("nats://127.0.0.1:4222", Default::default()),
            database_url: "postgres://postgres@127.0.0.1:5432/flexcore".to_owned(),
            clients: 64,
            duration: Duration::from_secs(2),
            warmup: Duration::from_secs(1),
            phases: Phases {
                commands: true,
                raw: true,
            },
        }
    }

    /// `ok` successes in a 2 s window, with latencies of 1..=100 ms.
    pub(crate) fn stats(ok: u64) -> PhaseStats {
        let mut s = PhaseStats::new(Duration::from_secs(2)).unwrap();
        for ms in 1..=100 {
            s.record_ok(Duration::from_millis(ms));
        }
        s.ok = ok;
        s
    }

    /// A report with 500 commands/s and 2000 inserts/s.
    pub(crate) fn report() -> Report {
        let mut commands = stats(1000);
        commands.record_rejected("invalid_state", Duration::from_millis(1));
        commands.record_failed("timed_out");
        let mut report = Report::new(&config(), Some(&commands), Some(&stats(4000)));
        report.machine = Machine {
            cpu: "AMD EPYC".to_owned(),
            cores: 2,
            memory_gib: 23.54,
            kernel: "6.1.0".to_owned(),
        };
        report
    }

    #[test]
    fn the_ratio_compares_rates() {
        let r = report();
        assert_eq!(r.commands.as_ref().map(|c| c.per_second), Some(500.0));
        assert_eq!(r.raw.as_ref().map(|c| c.per_second), Some(2000.0));
        assert_eq!(r.commands_to_raw_percent, Some(25.0));
        let raw_only = Report::new(&config(), None, Some(&stats(4000)));
        assert_eq!(raw_only.commands_to_raw_percent, None);
    }

    #[test]
    fn text_shows_rates_percentiles_errors_and_ratio() {
        let text = report().text();
        assert!(
            text.starts_with(
                "flexctl bench commands: 64 clients, 2s measured after 1s warm-up\n\
                 machine   AMD EPYC, 2 cores, 24 GiB, Linux 6.1.0\n"
            ),
            "{text}"
        );
        assert!(text.contains("commands       500 /s   p50 50.02 ms"), "{text}");
        assert!(
            text.contains("p99 99.01 ms   max 100.03 ms   (1000 accepted)"),
            "{text}"
        );
        assert!(text.contains("errors: invalid_state 1, timed_out 1"), "{text}");
        assert!(text.contains("raw           2000 /s"), "{text}");
        assert!(text.contains("ratio     25.0 %"), "{text}");
    }

    #[test]
    fn json_is_one_object_with_every_figure() {
        let json: serde_json::Value = serde_json::to_value(report()).unwrap();
        assert_eq!(json["clients"], 64);
        assert_eq!(json["commands"]["accepted"], 1000);
        assert_eq!(json["commands"]["rejected"]["invalid_state"], 1);
        assert_eq!(json["commands"]["transport_errors"]["timed_out"], 1);
        assert_eq!(json["raw"]["inserts"], 4000);
        assert_eq!(json["commands_to_raw_percent"], 25.0);
        for phase in ["commands", "raw"] {
            for key in ["p50_ms", "p95_ms", "p99_ms", "max_ms", "samples"] {
                assert!(json[phase]["latency"][key].is_number(), "{phase}.latency.{key}");
            }
        }
        assert!(json["machine"]["cores"].is_number());
    }
}
