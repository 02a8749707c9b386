//! `flexctl`: the FlexCore operator CLI, as a library so tests drive it without a process.
//!
//! # Layout
//! - [`cli`]: the command line (clap derive), its global options, and dispatch.
//! - [`duration`]: the `30s` / `2m` / `500ms` parser used by duration options.
//! - [`plugin`]: `flexctl plugin register` (upload + register).
//! - [`schedule`]: `flexctl schedule backfill`.
//! - [`security`]: `flexctl security init|add|remove|accounts`, a deployment's identities.
//! - [`bench`]: `flexctl bench commands`, the command-throughput benchmark:
//!   - `bench/mod.rs`: [`bench::BenchConfig`], [`bench::run`] (phase order) and the
//!     measured [`bench::Window`];
//!   - `bench/setup.rs`: phase 0 (plugins and one pipeline per client, not timed) and
//!     the clean-up that archives those pipelines;
//!   - `bench/commands.rs`: phase 1, N clients sending pause/resume requests over NATS;
//!   - `bench/raw.rs`: phase 2, the raw single-row INSERT+COMMIT ceiling of the same
//!     Postgres;
//!   - `bench/stats.rs`: per-phase counters and latency histograms, percentile extraction;
//!   - `bench/report.rs`: the report (text and JSON);
//!   - `bench/record.rs`: machine facts and the Markdown row appended by `--record`;
//!   - `bench/projection.rs`: `bench lag|queries|rebuild`;
//!   - `bench/schedules.rs`: `bench schedules` (scheduler fire lag).

pub mod api;
pub mod api_key;
pub mod bench;
pub mod cli;
pub mod dev;
pub mod duration;
pub mod events;
pub mod pipeline;
pub use flexcore_pipeline_file::pipeline_file;
pub mod plugin;
pub mod run;
pub mod schedule;
pub mod security;
pub mod status;
pub mod table;
pub use flexcore_pipeline_file::yaml;

/// One NATS connection (a clear error when the server is unreachable).
pub async fn connect_one(nats_url: &str) -> anyhow::Result<async_nats::Client> {
    bench::commands::connect(nats_url, 1)
        .await?
        .pop()
        // Not the URL: it may carry a password.
        .ok_or_else(|| anyhow::anyhow!("no NATS connection"))
}

/// Prints one result line on stdout.
#[allow(clippy::print_stdout)]
pub fn write_stdout(line: &str) -> anyhow::Result<()> {
    println!("{line}");
    Ok(())
}
