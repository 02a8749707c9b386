//! The command line of `flexctl bench`: its subcommands and their options, and dispatch.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use flexctl::cli::{load_identity, Globals, Output};
use flexctl::duration::parse_duration;

use super::{BenchConfig, Phases};
use crate::bench;

/// `flexctl bench …`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Command throughput and latency of a running flexcore-command (N clients toggling
    /// their own pipeline with pipeline.pause / pipeline.resume), then the raw
    /// single-row INSERT+COMMIT ceiling of the same Postgres at the same concurrency.
    Commands(CommandsArgs),
    /// Plugin runner throughput in-process: generator → mapper → discard as wasm and as
    /// the same plugins compiled natively (same wiring), small-run latency, concurrent
    /// small runs and peak RSS. Needs plugins/build.sh and
    /// `cargo build --release -p flexcore-plugin-generator -p flexcore-plugin-mapper -p flexcore-plugin-discard`.
    Pipeline(PipelineArgs),
    /// A CSV → JSONL pipeline end to end through a running stack (`flexctl dev`): writes
    /// a CSV of N rows of 8 columns into the csv plugin's granted directory, runs the
    /// pipeline once through the command service and a runner, checks the output holds
    /// every row, and reports rows/s and the runner's CPU seconds per million rows.
    Csv(CsvArgs),
    /// Event → read-model lag: open-loop pipeline toggles at a fixed rate, each followed
    /// by a `pipeline.get` with `min_position` (needs flexcore-command and
    /// flexcore-projection running).
    Lag(LagArgs),
    /// Query throughput and latency: `pipeline.get` by random id, then `pipeline.list`
    /// pages of 100, from N clients.
    Queries(QueriesArgs),
    /// The HTTP gateway against NATS in one run: pause/resume toggles straight over NATS,
    /// the same through the gateway, then `GET /pipelines/{id}` (needs the services and
    /// flexcore-gateway running).
    Http(HttpArgs),
    /// The web console's page times with large read models: seeds pipelines, schedules
    /// and runs until the read models hold as many as asked (runs are claimed and ended as
    /// the runner identity of --runner-seed-file; start the stack with `flexctl dev
    /// --no-runner`), then requests each page N times, one at a time.
    Console(ConsoleArgs),
    /// Projection rebuild speed; seeds the event log with pipeline toggles first when it
    /// holds fewer than --events events.
    Rebuild(RebuildArgs),
    /// Scheduler fire lag: N schedules firing every minute for M minutes (needs
    /// flexcore-command and one or more flexcore-scheduler running); reports fire lag,
    /// duplicate and missing runs, and the schedulers' RSS.
    Schedules(SchedulesArgs),
    /// Service cold start with a long log: seeds the log (set-based inserts of valid
    /// pipeline toggles) until it holds --events events, lets the relay publish them, then
    /// starts each service alone (the binaries of --bin-dir) and times it to its first
    /// `200` from `/health/ready`.
    ColdStart(ColdStartArgs),
}

/// Options of `flexctl bench cold-start`.
#[derive(Debug, Clone, Args)]
pub struct ColdStartArgs {
    /// `--database-url`: the stack's database (the services' and the seeding's).
    #[command(flatten)]
    pub database: crate::cli::DatabaseArgs,
    /// Events the log should hold (seeded when it holds fewer).
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: u64,
    /// Schedules created (once a year each) before seeding: the scheduler's state.
    #[arg(long, default_value_t = 10_000)]
    pub schedules: usize,
    /// Directory of the service binaries (default: beside this executable).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Directory of the services' seeds (`<identity>.nk`) and `identities.json`, e.g. the
    /// one `flexctl security init --dir` wrote; none for a NATS server without accounts.
    #[arg(long)]
    pub keys_dir: Option<PathBuf>,
    /// Admin port each service is started with (one at a time).
    #[arg(long, default_value_t = 9190)]
    pub admin_port: u16,
    /// Services to time, in order.
    #[arg(long = "service", default_values_t = ["flexcore-command".to_owned(), "flexcore-projection".to_owned(), "flexcore-scheduler".to_owned(), "flexcore-runner".to_owned()])]
    pub services: Vec<String>,
}

/// Options of `flexctl bench schedules`.
#[derive(Debug, Clone, Args)]
pub struct SchedulesArgs {
    /// Schedules (each on its own pipeline).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub schedules: u32,
    /// Minutes of firing (slots per schedule).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=60))]
    pub minutes: u32,
}

/// Options of `flexctl bench lag`.
#[derive(Debug, Clone, Args)]
pub struct LagArgs {
    /// Commands (events) per second, sustained.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,
    /// Pipelines toggled (each at rate/pipelines per second).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub pipelines: u32,
    /// Check the read-your-write latency of every N-th command.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: u64,
    /// Measured duration, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,
}

/// Options of `flexctl bench queries`.
#[derive(Debug, Clone, Args)]
pub struct QueriesArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub clients: u32,
    /// Pipelines created to query.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub pipelines: u32,
    /// Measured duration of each phase.
    #[arg(long, default_value = "20s", value_parser = parse_positive_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before each phase.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,
}

/// Options of `flexctl bench http`.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (or JWT) of role operator or admin; without it, anonymous.
    #[arg(long, env = "FLEXCORE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Concurrent clients (HTTP: keep-alive connections).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub clients: u32,
    /// Measured duration of each phase.
    #[arg(long, default_value = "20s", value_parser = parse_positive_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before each phase.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,
}

/// Options of `flexctl bench console`.
#[derive(Debug, Clone, Args)]
pub struct ConsoleArgs {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (or JWT) of any role; without it, anonymous.
    #[arg(long, env = "FLEXCORE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Pipelines the read models should hold (the missing ones are created).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub pipelines: u64,
    /// Runs the read models should hold (the missing ones are requested and ended).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub runs: u64,
    /// Schedules the read models should hold (daily, on the first pipelines).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub schedules: u64,
    /// Seed of the runner identity the seeded runs are claimed and ended as
    /// (`flexctl dev`: .flexcore/keys/runner.nk); needs --identities-file.
    #[arg(long)]
    pub runner_seed_file: Option<PathBuf>,
    /// Measured requests of each page (after 20 unmeasured ones).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub requests: u64,
}

/// Options of `flexctl bench rebuild`.
#[derive(Debug, Clone, Args)]
pub struct RebuildArgs {
    /// Events the log should hold before rebuilding (seeded with pipeline toggles).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Projections to rebuild, one after the other.
    #[arg(long = "projection", default_values_t = ["audit".to_owned(), "pipelines".to_owned()])]
    pub projections: Vec<String>,
}

/// Options of `flexctl bench pipeline`.
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// Records through the throughput pipeline.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Cargo target directory with wasm32-wasip1/release/*.wasm and release/* plugins.
    #[arg(long, env = "CARGO_TARGET_DIR", default_value = "target")]
    pub target_dir: PathBuf,
    /// 1-record executions timed for the latency figure.
    #[arg(long, default_value_t = 1000)]
    pub small_runs: u32,
    /// Small executions run at once.
    #[arg(long, default_value_t = 100)]
    pub concurrent: usize,
}

/// Options of `flexctl bench csv`.
#[derive(Debug, Clone, Args)]
pub struct CsvArgs {
    /// Data rows in the CSV.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rows: u64,
    /// The stack's state directory (as given to `flexctl dev --state-dir`).
    #[arg(long, default_value = ".flexcore")]
    pub state_dir: PathBuf,
    /// Directory with the example plugins' .wasm files (built by plugins/build.sh).
    #[arg(long, default_value = "target/plugins")]
    pub plugins_dir: PathBuf,
    /// Source of the example plugins' config schemas.
    #[arg(long, default_value = "plugins")]
    pub plugins_src: PathBuf,
    /// How long the run may take, e.g. 10m.
    #[arg(long, default_value = "10m", value_parser = parse_positive_duration)]
    pub timeout: Duration,
}

/// Options of `flexctl bench commands`.
#[derive(Debug, Clone, Args)]
pub struct CommandsArgs {
    /// `--database-url`.
    #[command(flatten)]
    pub database: crate::cli::DatabaseArgs,
    /// Concurrent clients (and Postgres connections in the raw phase).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub clients: u32,
    /// Measured duration of each phase, e.g. 30s, 2m, 500ms.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before each phase's measured window.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Skip the raw Postgres ceiling (phase 2).
    #[arg(long, conflicts_with = "raw_only")]
    pub skip_raw: bool,
    /// Run only the raw Postgres ceiling (no NATS, no command service needed).
    #[arg(long)]
    pub raw_only: bool,
    /// Append the results as a Markdown table row to this file, e.g. docs/benchmarks.md.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("the measured duration must be more than zero".to_owned());
    }
    Ok(d)
}

/// Runs `flexctl bench …` against the NATS server (and login) of `globals`.
pub async fn run(globals: &Globals, command: &BenchCommand) -> anyhow::Result<()> {
    let (nats, output) = (globals.nats()?, globals.output);
    match command {
        BenchCommand::Pipeline(args) => {
            let config = bench::pipeline::PipelineBench {
                records: args.records,
                target_dir: args.target_dir.clone(),
                small_runs: args.small_runs,
                concurrent: args.concurrent,
            };
            let report = bench::pipeline::run_bench(&config).await?;
            print_json_or(&report, output, || report.text())
        }
        BenchCommand::Csv(args) => {
            let config = bench::csv::CsvBench {
                rows: args.rows,
                state_dir: args.state_dir.clone(),
                plugins_dir: args.plugins_dir.clone(),
                plugins_src: args.plugins_src.clone(),
                timeout: args.timeout,
            };
            let report = bench::csv::run(&nats, &config).await?;
            print_json_or(&report, output, || report.text())
        }
        BenchCommand::Lag(args) => {
            let figures = bench::projection::lag(
                &nats,
                args.rate,
                usize::try_from(args.pipelines)?,
                args.sample,
                args.warmup,
                args.duration,
            )
            .await?;
            print_figures(&[figures], output)
        }
        BenchCommand::Http(args) => {
            let report = bench::http::run(
                &nats,
                &args.url,
                args.api_key.as_deref(),
                usize::try_from(args.clients)?,
                args.warmup,
                args.duration,
            )
            .await?;
            print_json_or(&report, output, || report.text())
        }
        BenchCommand::Queries(args) => {
            let figures = bench::projection::queries(
                &nats,
                usize::try_from(args.clients)?,
                usize::try_from(args.pipelines)?,
                args.warmup,
                args.duration,
            )
            .await?;
            print_figures(&figures, output)
        }
        BenchCommand::Schedules(args) => {
            let figures = bench::schedules::run(&nats, usize::try_from(args.schedules)?, args.minutes).await?;
            print_json_or(&figures, output, || figures.text())
        }
        BenchCommand::ColdStart(args) => {
            let bin_dir = match &args.bin_dir {
                Some(dir) => dir.clone(),
                None => std::env::current_exe()?
                    .parent()
                    .map(std::path::Path::to_path_buf)
                    .ok_or_else(|| anyhow::anyhow!("no directory of this executable; pass --bin-dir"))?,
            };
            let bench = bench::cold_start::ColdStartBench {
                nats,
                database_url: args.database.url.clone(),
                events: args.events,
                schedules: args.schedules,
                bin_dir,
                keys_dir: args.keys_dir.clone(),
                admin_port: args.admin_port,
                services: args.services.clone(),
            };
            let figures = bench::cold_start::run(&bench).await?;
            print_json_or(&figures, output, || figures.text())
        }
        BenchCommand::Console(args) => {
            let runner = match (&args.runner_seed_file, &globals.identities_file) {
                (None, _) => None,
                (Some(_), None) => anyhow::bail!("--runner-seed-file needs --identities-file"),
                (Some(seed_file), Some(identities)) => Some(load_identity(seed_file, identities)?),
            };
            let bench = bench::console::ConsoleBench {
                url: args.url.clone(),
                api_key: args.api_key.clone(),
                pipelines: args.pipelines,
                runs: args.runs,
                schedules: args.schedules,
                runner,
                requests: usize::try_from(args.requests)?,
            };
            let report = bench::console::run(&nats, &bench).await?;
            print_json_or(&report, output, || report.text())
        }
        BenchCommand::Rebuild(args) => {
            let figures = bench::projection::rebuild(&nats, &args.projections, args.events).await?;
            print_json_or(&figures, output, || {
                figures
                    .iter()
                    .map(|f| {
                        format!(
                            "rebuild {:<10} {:>9} events  {:>7.1} s wall  {:>9.0} events/s replay\n",
                            f.name, f.events, f.seconds, f.events_per_second
                        )
                    })
                    .collect()
            })
        }
        BenchCommand::Commands(args) => {
            let config = BenchConfig {
                nats,
                database_url: args.database.url.clone(),
                clients: usize::try_from(args.clients)?,
                duration: args.duration,
                warmup: args.warmup,
                phases: Phases {
                    commands: !args.raw_only,
                    raw: !args.skip_raw,
                },
            };
            let report = bench::run(&config).await?;
            bench::report::print(&report, output)?;
            if let Some(path) = &args.record {
                let command_line = bench::record::command_line(std::env::args());
                bench::record::append(path, &report, &command_line)?;
                tracing::info!(file = %path.display(), "recorded the results");
            }
            Ok(())
        }
    }
}

/// Prints `value` as pretty JSON, or the text `text` makes.
fn print_json_or<T: serde::Serialize>(value: &T, output: Output, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    match output {
        Output::Text => flexctl::write_stdout_raw(text().as_bytes()),
        Output::Json => flexctl::write_stdout(&serde_json::to_string_pretty(value)?),
    }
}

fn print_figures(figures: &[bench::projection::Figures], output: Output) -> anyhow::Result<()> {
    print_json_or(&figures, output, || {
        figures.iter().map(bench::projection::Figures::text).collect()
    })
}
