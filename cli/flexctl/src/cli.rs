//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// FlexCore operator CLI.
#[derive(Debug, Parser)]
#[command(name = "flexctl", version, about = "FlexCore operator CLI")]
pub struct Cli {
    /// NATS server URL.
    #[arg(
        long,
        global = true,
        env = "FLEXCORE__NATS__URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Postgres URL (benchmarks' raw ceiling only; flexctl never reads FlexCore's tables).
    #[arg(
        long,
        global = true,
        env = "FLEXCORE__DATABASE__URL",
        default_value = "postgres://postgres@127.0.0.1:5432/flexcore"
    )]
    pub database_url: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable.
    Text,
    /// One JSON document, for scripts.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Command throughput and latency against a running flexcore-command, and the raw
    /// single-event INSERT+COMMIT ceiling of the same Postgres at the same concurrency.
    Commands(CommandsBench),
}

/// Options of `flexctl bench commands`.
#[derive(Debug, clap::Args)]
pub struct CommandsBench {
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Measured duration (e.g. 30s, 2m, 500ms).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before the measured window.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Skip the raw Postgres ceiling.
    #[arg(long, conflicts_with = "raw_only")]
    pub skip_raw: bool,
    /// Only measure the raw Postgres ceiling.
    #[arg(long)]
    pub raw_only: bool,
    /// Append the result as a Markdown table row to this file (e.g. docs/benchmarks.md).
    #[arg(long)]
    pub record: Option<PathBuf>,
}

/// Parses `500ms`, `30s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 2m or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {s:?}: use ms, s, m or h")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{s:?} is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
