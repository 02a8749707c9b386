//! The command line (clap derive) and dispatch to the subcommands.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use flexcore_config::{LogFormat, Secret, TelemetrySettings};

use crate::bench::{self, BenchConfig, Phases};
use crate::duration::parse_duration;

/// FlexCore operator CLI.
#[derive(Debug, Parser)]
#[command(name = "flexctl", version, about = "FlexCore operator CLI")]
pub struct Cli {
    /// NATS server the FlexCore services listen on.
    #[arg(
        long,
        global = true,
        env = "FLEXCORE__NATS__URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// NATS user to log in as with a password (servers that use passwords; FlexCore's own
    /// use NKeys, see --nkey-seed-file); without it,
    /// credentials in the URL (`nats://user:password@host:4222`) are used, if any.
    #[arg(long, global = true, env = "FLEXCORE__NATS__USER")]
    pub nats_user: Option<String>,
    /// Password of the NATS user.
    #[arg(long, global = true, env = "FLEXCORE__NATS__PASSWORD", hide_env_values = true)]
    pub nats_password: Option<Secret>,
    /// File holding this operator's NKey seed (`flexctl dev` and `flexctl security init`
    /// write them): logs in to NATS and signs every command, recorded as its actor.
    #[arg(long, global = true, env = "FLEXCORE__NATS__NKEY_SEED_FILE", value_name = "FILE")]
    pub nkey_seed_file: Option<PathBuf>,
    /// The identities file, where the seed's identity and role are looked up.
    #[arg(
        long,
        global = true,
        env = "FLEXCORE__SECURITY__IDENTITIES_FILE",
        value_name = "FILE"
    )]
    pub identities_file: Option<PathBuf>,
    /// CA certificates (PEM) to trust for the NATS server's TLS certificate.
    #[arg(long, global = true, env = "FLEXCORE__NATS__TLS_CA_FILE", value_name = "FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with --tls-key-file).
    #[arg(long, global = true, env = "FLEXCORE__NATS__TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert-file.
    #[arg(long, global = true, env = "FLEXCORE__NATS__TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// OTLP/gRPC endpoint to export flexctl's own spans to (e.g. `http://127.0.0.1:4317`):
    /// each request then carries a W3C `traceparent`, so the trace of a command or a run
    /// starts at flexctl. The services export with the same variable.
    #[arg(long, global = true, env = "FLEXCORE__TELEMETRY__OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// PostgreSQL server (used by the benchmark's raw ceiling; flexctl never reads
    /// FlexCore's own tables).
    #[arg(
        long,
        global = true,
        env = "FLEXCORE__DATABASE__URL",
        default_value = "postgres://postgres@127.0.0.1:5432/flexcore",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Output format of results: aligned text for people, JSON for scripts (progress and
    /// logs always go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable lines.
    Text,
    /// One JSON object, for scripts.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a whole local FlexCore: Postgres and NATS (found or started), the four
    /// services, the example plugins, a demo pipeline and schedule. Ctrl-C stops it.
    Dev(crate::dev::DevArgs),
    /// Plugins: register, list, show, deprecate, disable, enable.
    #[command(subcommand)]
    Plugin(crate::plugin::PluginCommand),
    /// Pipelines: create -f FILE, list, show, update, pause, resume, archive.
    #[command(subcommand)]
    Pipeline(crate::pipeline::PipelineCommand),
    /// Runs: start [--follow], list, show, cancel, logs.
    #[command(subcommand)]
    Run(crate::run::RunCommand),
    /// Schedules: create, list, pause, resume, delete, backfill.
    #[command(subcommand)]
    Schedule(crate::schedule::ScheduleCommand),
    /// Events, live from the event stream.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Services seen, projection lag, queue depth, runner slots.
    Status,
    /// Identities (NKeys) of a deployment: init, add, remove, accounts.
    #[command(subcommand)]
    Security(crate::security::SecurityCommand),
    /// API keys of the HTTP gateway: create, revoke, list.
    #[command(subcommand, name = "api-key")]
    ApiKey(crate::api_key::ApiKeyCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print a shell completion script, e.g. `flexctl completions bash > /etc/bash_completion.d/flexctl`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `flexctl events …`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print events as they are appended (optionally the last N first), filtered by
    /// aggregate and type.
    Tail(crate::events::TailArgs),
}

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

/// Options of `flexctl bench commands`.
#[derive(Debug, Clone, Args)]
pub struct CommandsArgs {
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

/// Logging of the CLI: human-readable text on stderr, quiet dependencies; spans exported
/// to `otlp_endpoint` (`--otlp-endpoint`), if given and not blank.
pub fn telemetry_settings(otlp_endpoint: Option<&str>) -> TelemetrySettings {
    TelemetrySettings {
        log_format: LogFormat::Text,
        log_filter: "info,async_nats=warn,sqlx=warn".to_owned(),
        otlp_endpoint: otlp_endpoint
            .map(str::trim)
            .filter(|endpoint| !endpoint.is_empty())
            .map(str::to_owned),
        ..TelemetrySettings::default()
    }
}

#[allow(clippy::print_stdout)]
fn print_stdout(text: &str) {
    print!("{text}");
}

fn print_figures(figures: &[bench::projection::Figures], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Text => figures.iter().for_each(|f| print_stdout(&f.text())),
        Output::Json => print_stdout(&format!("{}\n", serde_json::to_string_pretty(figures)?)),
    }
    Ok(())
}

/// The identity whose seed is in `seed_file`, as the identities file names it.
fn load_identity(
    seed_file: &std::path::Path,
    identities: &std::path::Path,
) -> anyhow::Result<flexcore_security::Identity> {
    let trust = flexcore_security::Trust::load(identities)?;
    let seed = std::fs::read_to_string(seed_file)
        .map_err(|e| anyhow::anyhow!("reading the NKey seed file {}: {e}", seed_file.display()))?;
    Ok(flexcore_security::Identity::from_seed(&seed, &trust)?)
}

/// How this process reaches NATS, from the global options.
fn nats_access(cli: &Cli, with_identity: bool) -> anyhow::Result<bench::commands::NatsAccess> {
    let identity = match (&cli.nkey_seed_file, &cli.identities_file) {
        _ if !with_identity => None,
        (None, _) => None,
        (Some(_), None) => anyhow::bail!(
            "--nkey-seed-file needs --identities-file (FLEXCORE__SECURITY__IDENTITIES_FILE), where its identity is"
        ),
        (Some(seed_file), Some(identities)) => Some(load_identity(seed_file, identities)?),
    };
    let tls_client = match (&cli.tls_cert_file, &cli.tls_key_file) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert-file and --tls-key-file go together"),
    };
    Ok(bench::commands::NatsAccess {
        user: cli.nats_user.clone().unwrap_or_default(),
        password: cli.nats_password.clone().unwrap_or_else(|| Secret::new("")),
        identity,
        tls_ca_file: cli.tls_ca_file.clone(),
        tls_client,
    })
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Every NATS connection of this process logs in with these (bench::commands::connect).
    // `flexctl dev` makes (or reuses) the stack's identities and logs in as its `flexctl`.
    bench::commands::set_nats_access(nats_access(&cli, !matches!(cli.command, Command::Dev(_)))?);
    match &cli.command {
        Command::Dev(args) => crate::dev::run(&cli, args).await,
        Command::Plugin(command) => crate::plugin::run(&cli.nats_url, command, cli.output).await,
        Command::Pipeline(command) => crate::pipeline::run(&cli.nats_url, command, cli.output).await,
        Command::Run(command) => crate::run::run(&cli.nats_url, command, cli.output).await,
        Command::Schedule(command) => crate::schedule::run(&cli.nats_url, command, cli.output).await,
        Command::Events(EventsCommand::Tail(args)) => crate::events::tail(&cli.nats_url, args, cli.output).await,
        Command::Status => crate::status::run(&cli.nats_url, cli.output).await,
        Command::Security(command) => crate::security::run(command),
        Command::ApiKey(command) => crate::api_key::run(command, cli.output),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(*shell, &mut Cli::command(), "flexctl", &mut std::io::stdout());
            Ok(())
        }
        Command::Bench(BenchCommand::Pipeline(args)) => {
            let config = bench::pipeline::PipelineBench {
                records: args.records,
                target_dir: args.target_dir.clone(),
                small_runs: args.small_runs,
                concurrent: args.concurrent,
            };
            let report = bench::pipeline::run_bench(&config).await?;
            match cli.output {
                Output::Text => print_stdout(&report.text()),
                Output::Json => print_stdout(&format!("{}\n", serde_json::to_string_pretty(&report)?)),
            }
            Ok(())
        }
        Command::Bench(BenchCommand::Lag(args)) => {
            let figures = bench::projection::lag(
                &cli.nats_url,
                args.rate,
                usize::try_from(args.pipelines)?,
                args.sample,
                args.warmup,
                args.duration,
            )
            .await?;
            print_figures(&[figures], cli.output)
        }
        Command::Bench(BenchCommand::Http(args)) => {
            let report = bench::http::run(
                &cli.nats_url,
                &args.url,
                args.api_key.as_deref(),
                usize::try_from(args.clients)?,
                args.warmup,
                args.duration,
            )
            .await?;
            match cli.output {
                Output::Text => print_stdout(&report.text()),
                Output::Json => print_stdout(&format!("{}\n", serde_json::to_string_pretty(&report)?)),
            }
            Ok(())
        }
        Command::Bench(BenchCommand::Queries(args)) => {
            let figures = bench::projection::queries(
                &cli.nats_url,
                usize::try_from(args.clients)?,
                usize::try_from(args.pipelines)?,
                args.warmup,
                args.duration,
            )
            .await?;
            print_figures(&figures, cli.output)
        }
        Command::Bench(BenchCommand::Schedules(args)) => {
            let figures = bench::schedules::run(&cli.nats_url, usize::try_from(args.schedules)?, args.minutes).await?;
            match cli.output {
                Output::Text => print_stdout(&figures.text()),
                Output::Json => print_stdout(&format!("{}\n", serde_json::to_string_pretty(&figures)?)),
            }
            Ok(())
        }
        Command::Bench(BenchCommand::Console(args)) => {
            let runner = match (&args.runner_seed_file, &cli.identities_file) {
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
            let report = bench::console::run(&cli.nats_url, &bench).await?;
            match cli.output {
                Output::Text => print_stdout(&report.text()),
                Output::Json => print_stdout(&format!("{}\n", serde_json::to_string_pretty(&report)?)),
            }
            Ok(())
        }
        Command::Bench(BenchCommand::Rebuild(args)) => {
            let figures = bench::projection::rebuild(&cli.nats_url, &args.projections, args.events).await?;
            match cli.output {
                Output::Text => {
                    for f in &figures {
                        print_stdout(&format!(
                            "rebuild {:<10} {:>9} events  {:>7.1} s wall  {:>9.0} events/s replay\n",
                            f.name, f.events, f.seconds, f.events_per_second
                        ));
                    }
                }
                Output::Json => print_stdout(&format!("{}\n", serde_json::to_string_pretty(&figures)?)),
            }
            Ok(())
        }
        Command::Bench(BenchCommand::Commands(args)) => {
            let config = BenchConfig {
                nats_url: cli.nats_url.clone(),
                database_url: cli.database_url.clone(),
                clients: usize::try_from(args.clients)?,
                duration: args.duration,
                warmup: args.warmup,
                phases: Phases {
                    commands: !args.raw_only,
                    raw: !args.skip_raw,
                },
            };
            let report = bench::run(&config).await?;
            bench::report::print(&report, cli.output)?;
            if let Some(path) = &args.record {
                let command_line = bench::record::command_line(std::env::args());
                bench::record::append(path, &report, &command_line)?;
                tracing::info!(file = %path.display(), "recorded the results");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn bench_commands_parses_its_options() {
        let cli = Cli::try_parse_from([
            "flexctl",
            "bench",
            "commands",
            "--clients",
            "8",
            "--duration",
            "3s",
            "--warmup",
            "0s",
            "--raw-only",
            "--output",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.output, Output::Json);
        let Command::Bench(BenchCommand::Commands(args)) = cli.command else {
            panic!("not bench commands")
        };
        assert_eq!(args.clients, 8);
        assert_eq!(args.duration, Duration::from_secs(3));
        assert_eq!(args.warmup, Duration::ZERO);
        assert!(args.raw_only && !args.skip_raw);
    }

    #[test]
    fn nats_credentials_are_global_options_and_the_password_never_prints() {
        let cli = Cli::try_parse_from([
            "flexctl",
            "status",
            "--nats-user",
            "flexctl",
            "--nats-password",
            "hunter2",
        ])
        .unwrap();
        assert_eq!(cli.nats_user.as_deref(), Some("flexctl"));
        assert_eq!(cli.nats_password.as_ref().map(Secret::expose), Some("hunter2"));
        assert!(!format!("{cli:?}").contains("hunter2"));
    }

    #[test]
    fn contradictions_and_zero_durations_are_refused() {
        let parse = |extra: &[&str]| Cli::try_parse_from([&["flexctl", "bench", "commands"], extra].concat());
        assert!(parse(&["--raw-only", "--skip-raw"]).is_err());
        assert!(parse(&["--duration", "0s"]).is_err());
        assert!(parse(&["--clients", "0"]).is_err());
        assert!(parse(&["--duration", "30"]).is_err());
    }
}
