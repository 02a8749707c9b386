//! `flexctl bench …`.
//!
//! - [`nats_phase`]: N clients sending commands to flexcore-command over NATS.
//! - [`raw`]: N connections doing single-event INSERT+COMMIT on the same Postgres.
//! - [`report`]: latency summaries, text/JSON output, the Markdown record.

mod nats_phase;
mod raw;
mod report;

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::cli::{Cli, CommandsBench};

/// What one timed phase measured.
pub struct Phase {
    /// Operations that succeeded inside the measured window.
    pub ok: u64,
    /// Refusals by error code, and transport errors under `transport`.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Latency of measured operations, in microseconds.
    pub latency: Histogram<u64>,
    /// Length of the measured window.
    pub window: Duration,
}

impl Phase {
    fn new(window: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            ok: 0,
            errors: Default::default(),
            latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            window,
        })
    }

    fn merge(&mut self, other: Phase) -> anyhow::Result<()> {
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.latency.add(other.latency)?;
        Ok(())
    }
}

/// The measured window of a phase: operations that start in it are measured.
#[derive(Clone, Copy)]
pub struct Window {
    /// Start of measurement (after warm-up).
    pub from: Instant,
    /// End of the phase.
    pub until: Instant,
}

impl Window {
    fn starting_now(warmup: Duration, duration: Duration) -> Self {
        let from = Instant::now() + warmup;
        Self {
            from,
            until: from + duration,
        }
    }
}

/// `flexctl bench commands`.
pub async fn commands(cli: &Cli, args: &CommandsBench) -> anyhow::Result<()> {
    let clients = args.clients.max(1);
    let commands = if args.raw_only {
        None
    } else {
        eprintln!(
            "commands: {clients} clients, {:?} warm-up, {:?} measured …",
            args.warmup, args.duration
        );
        Some(nats_phase::run(&cli.nats_url, clients, args.warmup, args.duration).await?)
    };
    let raw = if args.skip_raw {
        None
    } else {
        eprintln!(
            "raw INSERT+COMMIT ceiling: {clients} connections, {:?} measured …",
            args.duration
        );
        Some(raw::run(&cli.database_url, clients, args.warmup, args.duration).await?)
    };
    let summary = report::Summary::new(clients, args.duration, commands.as_ref(), raw.as_ref());
    report::print(&summary, cli.output)?;
    if let Some(path) = &args.record {
        report::record(path, &summary)?;
        eprintln!("recorded in {}", path.display());
    }
    Ok(())
}
