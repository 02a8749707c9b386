//! `flexcore-dev`: FlexCore's development tools, the commands `flexctl dev` and
//! `flexctl bench` (flexctl hands them to this binary, found next to it: see
//! `flexctl::tools`). They are kept out of flexctl because they link what an operator's
//! NATS client should not: the plugin runtime (wasmtime, for `bench pipeline`), Postgres
//! (the raw ceiling of `bench commands`, the databases `dev` creates), an HTTP client,
//! and a supervisor of servers and services.
//!
//! # Layout
//! - [`cli`]: the command line (flexctl's global options, then `dev` or `bench`) and
//!   dispatch.
//! - [`dev`]: `flexctl dev`, a whole FlexCore on one machine (Postgres, NATS, identities,
//!   the services, the demo).
//! - [`supervise`]: what stops `dev` (Ctrl-C, SIGTERM, SIGHUP) and the restart policy
//!   of the processes it starts.
//! - [`bench`]: the benchmarks (`docs/benchmarks.md`):
//!   - `bench/cli.rs`: the `bench` subcommands, their options, and printing the reports;
//!   - `bench/mod.rs`: [`bench::BenchConfig`], [`bench::run`] (phase order of
//!     `bench commands`) and the measured [`bench::Window`];
//!   - `bench/setup.rs`: phase 0 (plugins and one pipeline per client, not timed) and
//!     the clean-up that archives those pipelines;
//!   - `bench/commands.rs`: phase 1, N clients sending pause/resume requests over NATS;
//!   - `bench/raw.rs`: phase 2, the raw single-row INSERT+COMMIT ceiling of the same
//!     Postgres;
//!   - `bench/stats.rs`: per-phase counters and latency histograms, percentile extraction;
//!   - `bench/report.rs`: the report (text and JSON);
//!   - `bench/record.rs`: machine facts and the Markdown row appended by `--record`;
//!   - `bench/pipeline.rs`: `bench pipeline` (the plugin runner in process);
//!   - `bench/csv.rs`: `bench csv` (a CSV → JSONL run end to end through the services);
//!   - `bench/projection.rs`: `bench lag|queries|rebuild`;
//!   - `bench/cold_start.rs`: `bench cold-start` (each service's start to ready with a long log);
//!   - `bench/http.rs`: `bench http` (the gateway against NATS);
//!   - `bench/console.rs`: `bench console` (the web console's pages);
//!   - `bench/schedules.rs`: `bench schedules` (scheduler fire lag).

pub mod bench;
pub mod cli;
pub mod dev;
pub mod supervise;
