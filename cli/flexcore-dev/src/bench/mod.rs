//! `flexctl bench`, the benchmarks; this module's own is `bench commands`, the
//! command-throughput benchmark (the others: see the crate's `# Layout`).
//!
//! Phase 0 registers two plugins and gives every client its own pipeline (not timed).
//! Phase 1 has N clients toggle their pipeline with `pipeline.pause` / `pipeline.resume`
//! over NATS for a warm-up, then a measured window. Phase 2 has N Postgres connections do
//! single-row INSERT+COMMIT into a scratch table shaped like `events`, with the same
//! warm-up and window: the ceiling one-event-per-transaction writes could reach.

pub mod cli;
pub mod cold_start;
pub mod commands;
pub mod console;
pub mod csv;
pub mod http;
pub mod pipeline;
pub mod projection;
pub mod raw;
pub mod record;
pub mod report;
pub mod schedules;
pub mod setup;
pub mod stats;

use std::time::{Duration, Instant};

use flexctl::nats::Nats;

use crate::bench::report::Report;

/// What to benchmark, and where.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// NATS server of the command service, and the login to use there.
    pub nats: Nats,
    /// PostgreSQL server of the raw phase.
    pub database_url: String,
    /// Concurrent clients (raw phase: connections).
    pub clients: usize,
    /// Measured window of each phase.
    pub duration: Duration,
    /// Unmeasured warm-up before each window.
    pub warmup: Duration,
    /// Which phases run.
    pub phases: Phases,
}

/// Which timed phases run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases {
    /// Phases 0 and 1: commands over NATS.
    pub commands: bool,
    /// Phase 2: the raw Postgres ceiling.
    pub raw: bool,
}

/// The measured window of a phase: operations that complete inside it are counted.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// End of the warm-up, start of measurement.
    pub start: Instant,
    /// End of measurement; clients stop sending.
    pub end: Instant,
}

impl Window {
    /// A window opening after `warmup` from now and lasting `duration`.
    pub fn after_warmup(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now() + warmup;
        Self {
            start,
            end: start + duration,
        }
    }

    /// Whether an operation that completed at `at` is measured.
    pub fn measures(&self, at: Instant) -> bool {
        at >= self.start && at <= self.end
    }

    /// Whether the phase is over at `at` (no operation starts from then on).
    pub fn is_over(&self, at: Instant) -> bool {
        at >= self.end
    }

    /// Length of the measured window.
    pub fn length(&self) -> Duration {
        self.end - self.start
    }
}

/// Runs the configured phases in order and reports on them.
pub async fn run(config: &BenchConfig) -> anyhow::Result<Report> {
    let commands = if config.phases.commands {
        Some(commands::run(&config.nats, config.clients, config.warmup, config.duration).await?)
    } else {
        None
    };
    let raw = if config.phases.raw {
        Some(raw::run(&config.database_url, config.clients, config.warmup, config.duration).await?)
    } else {
        None
    };
    Ok(Report::new(config, commands.as_ref(), raw.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_measures_completions_between_warmup_and_end() {
        let w = Window::after_warmup(Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(w.length(), Duration::from_secs(2));
        assert!(!w.measures(w.start - Duration::from_millis(1)));
        assert!(w.measures(w.start));
        assert!(w.measures(w.end));
        assert!(!w.measures(w.end + Duration::from_millis(1)));
        assert!(!w.is_over(w.start) && w.is_over(w.end));
    }
}
