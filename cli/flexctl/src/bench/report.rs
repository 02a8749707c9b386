//! Summaries, output and the Markdown record of a benchmark run.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::Phase;
use crate::cli::Output;

/// Figures of one phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Successful operations per second in the measured window.
    pub per_second: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 95th percentile latency, ms.
    pub p95_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Worst latency, ms.
    pub max_ms: f64,
    /// Successful operations.
    pub ok: u64,
    /// Failures by code.
    pub errors: BTreeMap<String, u64>,
}

impl Stats {
    /// Summarises a phase.
    pub fn of(phase: &Phase) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        let h = &phase.latency;
        Self {
            per_second: phase.ok as f64 / phase.window.as_secs_f64().max(f64::EPSILON),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            ok: phase.ok,
            errors: phase.errors.clone(),
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// UTC date and time.
    pub date: String,
    /// CPU, cores, memory, kernel.
    pub machine: String,
    /// Concurrency.
    pub clients: usize,
    /// Measured seconds per phase.
    pub duration_seconds: f64,
    /// Commands over NATS.
    pub commands: Option<Stats>,
    /// Raw INSERT+COMMIT ceiling.
    pub raw: Option<Stats>,
    /// commands/s ÷ raw inserts/s.
    pub ratio: Option<f64>,
}

impl Summary {
    /// Builds the summary.
    pub fn new(clients: usize, duration: Duration, commands: Option<&Phase>, raw: Option<&Phase>) -> Self {
        let commands = commands.map(Stats::of);
        let raw = raw.map(Stats::of);
        let ratio = match (&commands, &raw) {
            (Some(c), Some(r)) if r.per_second > 0.0 => Some(c.per_second / r.per_second),
            _ => None,
        };
        Self {
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            machine: machine(),
            clients,
            duration_seconds: duration.as_secs_f64(),
            commands,
            raw,
            ratio,
        }
    }

    /// Human-readable lines.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{} clients, {:.0} s measured per phase, {}\n",
            self.clients, self.duration_seconds, self.machine
        );
        let line = |name: &str, s: &Stats, unit: &str| {
            let errors = if s.errors.is_empty() {
                String::new()
            } else {
                format!("  errors {:?}", s.errors)
            };
            format!(
                "{name:<9} {:>9.0} {unit}/s   p50 {:.2} ms   p95 {:.2} ms   p99 {:.2} ms   max {:.2} ms{errors}\n",
                s.per_second, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms
            )
        };
        if let Some(c) = &self.commands {
            out += &line("commands", c, "commands");
        }
        if let Some(r) = &self.raw {
            out += &line("raw", r, "inserts");
        }
        if let Some(ratio) = self.ratio {
            out += &format!(
                "ratio     {:.0}% of the raw single-event INSERT+COMMIT ceiling\n",
                ratio * 100.0
            );
        }
        out
    }

    /// One Markdown table row.
    pub fn markdown_row(&self) -> String {
        let cell = |s: &Option<Stats>| match s {
            Some(s) => format!(
                "{:.0}/s, p50 {:.2} / p95 {:.2} / p99 {:.2} ms",
                s.per_second, s.p50_ms, s.p95_ms, s.p99_ms
            ),
            None => "—".into(),
        };
        let ratio = self.ratio.map_or("—".into(), |r| format!("{:.0}%", r * 100.0));
        format!(
            "| {} | {} | {} | {:.0} s | {} | {} | {} |\n",
            self.date,
            self.machine,
            self.clients,
            self.duration_seconds,
            cell(&self.commands),
            cell(&self.raw),
            ratio
        )
    }
}

/// Prints the summary to stdout.
#[allow(clippy::print_stdout)]
pub fn print(summary: &Summary, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Text => print!("{}", summary.text()),
        Output::Json => println!("{}", serde_json::to_string_pretty(summary)?),
    }
    Ok(())
}

/// Appends the summary as a Markdown row.
pub fn record(path: &Path, summary: &Summary) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(summary.markdown_row().as_bytes())?;
    Ok(())
}

fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")
                .map(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().unwrap_or(0.0))
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {kernel}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(latencies_us: &[u64], ok: u64) -> Phase {
        let mut p = Phase::new(Duration::from_secs(2)).unwrap();
        for l in latencies_us {
            p.latency.record(*l).unwrap();
        }
        p.ok = ok;
        p
    }

    #[test]
    fn stats_give_rate_and_percentiles() {
        let latencies: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let s = Stats::of(&phase(&latencies, 1000));
        assert!((s.per_second - 500.0).abs() < 1e-9);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{}", s.p50_ms);
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{}", s.p99_ms);
        assert!((s.max_ms - 100.0).abs() < 0.1);
    }

    #[test]
    fn summary_reports_the_ratio_and_renders() {
        let c = phase(&[2000], 100);
        let r = phase(&[1000], 400);
        let s = Summary::new(64, Duration::from_secs(2), Some(&c), Some(&r));
        assert_eq!(s.ratio, Some(0.25));
        assert!(s.text().contains("25% of the raw"));
        let row = s.markdown_row();
        assert!(row.starts_with("| ") && row.ends_with("| 25% |\n"), "{row}");
        let only_raw = Summary::new(8, Duration::from_secs(2), None, Some(&r));
        assert_eq!(only_raw.ratio, None);
        assert!(only_raw.markdown_row().contains("| — |"));
    }
}
