//! The command line (clap derive) and dispatch to the subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use flexcore_config::{LogFormat, Secret, TelemetrySettings};

use crate::nats::{Nats, NatsLogin};

/// FlexCore operator CLI.
#[derive(Debug, Parser)]
#[command(name = "flexctl", version, about = "FlexCore operator CLI")]
pub struct Cli {
    /// The options every command takes.
    #[command(flatten)]
    pub globals: Globals,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The options every command takes: where NATS is and how to log in there, tracing,
/// the output format. `flexcore-dev` (`flexctl dev`, `flexctl bench`) takes the same.
#[derive(Debug, Clone, Args)]
pub struct Globals {
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
    /// Output format of results: aligned text for people, JSON for scripts (progress and
    /// logs always go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

impl Globals {
    /// How to log in to NATS, from the login options; with `identity` false, without
    /// the operator's identity (`flexctl dev` logs in as the one it generates).
    pub fn login(&self, identity: bool) -> anyhow::Result<NatsLogin> {
        let identity = match (&self.nkey_seed_file, &self.identities_file) {
            _ if !identity => None,
            (None, _) => None,
            (Some(_), None) => anyhow::bail!(
                "--nkey-seed-file needs --identities-file (FLEXCORE__SECURITY__IDENTITIES_FILE), where its identity is"
            ),
            (Some(seed_file), Some(identities)) => Some(load_identity(seed_file, identities)?),
        };
        let tls_client = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert-file and --tls-key-file go together"),
        };
        Ok(NatsLogin {
            user: self.nats_user.clone().unwrap_or_default(),
            password: self.nats_password.clone().unwrap_or_else(|| Secret::new("")),
            identity,
            tls_ca_file: self.tls_ca_file.clone(),
            tls_client,
        })
    }

    /// `--nats-url`, logged in as the operator (`--nkey-seed-file`) or as the other
    /// login options say.
    pub fn nats(&self) -> anyhow::Result<Nats> {
        Ok(Nats::new(&self.nats_url, self.login(true)?))
    }
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
    /// Run a whole local FlexCore: Postgres and NATS (found or started), the services
    /// (command, projection, scheduler, runner, HTTP gateway), the example plugins, a demo
    /// pipeline and schedule. A service that exits is restarted; Ctrl-C, SIGTERM or SIGHUP
    /// stops it all.
    /// Run by flexcore-dev (next to flexctl); `flexctl dev --help` lists its options.
    #[command(disable_help_flag = true)]
    Dev(crate::tools::Forwarded),
    /// Plugins: register, list, show, deprecate, disable, enable.
    #[command(subcommand)]
    Plugin(crate::plugin::PluginCommand),
    /// Pipelines: create -f FILE, list, show, update, pause, resume, archive, delete (= archive).
    #[command(subcommand)]
    Pipeline(crate::pipeline::PipelineCommand),
    /// Create or update a pipeline and its schedules to match a file; shows the difference
    /// (`--dry-run`: only shows and checks it).
    Apply(crate::apply::ApplyArgs),
    /// Runs: start [--follow], list, show, cancel, logs.
    #[command(subcommand)]
    Run(crate::run::RunCommand),
    /// Schedules: create, list, show, update, pause, resume, delete, backfill.
    #[command(subcommand)]
    Schedule(crate::schedule::ScheduleCommand),
    /// Events: tail (live from the event stream), list (the stored ones, an audit log).
    #[command(subcommand)]
    Events(EventsCommand),
    /// Services seen, projection lag, queue depth, runner slots.
    Status,
    /// Read models: list (positions, lag), rebuild (admin only).
    #[command(subcommand)]
    Projection(crate::projection::ProjectionCommand),
    /// Names and ids for shell completion (the scripts of `completions` call it).
    #[command(name = "__complete", hide = true)]
    Complete(crate::complete::CompleteArgs),
    /// Identities (NKeys) of a deployment: init, add, remove, accounts.
    #[command(subcommand)]
    Security(crate::security::SecurityCommand),
    /// API keys of the HTTP gateway: create, revoke, list.
    #[command(subcommand, name = "api-key")]
    ApiKey(crate::api_key::ApiKeyCommand),
    /// Benchmarks: commands, http, console, pipeline, lag, queries, rebuild, schedules.
    /// Run by flexcore-dev (next to flexctl); `flexctl bench --help` lists them.
    #[command(disable_help_flag = true)]
    Bench(crate::tools::Forwarded),
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
    /// Print events as they are appended (optionally the last N matching ones first),
    /// filtered by aggregate and type.
    Tail(crate::events::TailArgs),
    /// The audit log: the stored events matching aggregate, type and time, oldest
    /// first (position, time, type, aggregate, actor), then exit.
    List(crate::events::ListArgs),
}

/// The whole of a CLI binary's `main` once its command line is parsed (flexctl's and
/// flexcore-dev's): logging installed (spans exported to `otlp_endpoint`, if given), the
/// command run, and its error printed in full on stderr, even when logging is filtered out
/// (as JSON with `--output json`: [`crate::error`]).
pub async fn main_with(
    otlp_endpoint: Option<&str>,
    command: impl std::future::Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    let _telemetry = match flexcore_telemetry::init("flexctl", &telemetry_settings(otlp_endpoint)) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: cannot initialise logging: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match command.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of stdout went away (`| head`): it has what it wanted; exit quietly,
        // with success so `set -o pipefail` scripts do not fail on it.
        Err(error) if crate::is_broken_pipe(&error) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // `--output json` makes it one JSON document on stderr (crate::error).
            crate::error::print(&std::env::args_os().collect::<Vec<_>>(), &error);
            std::process::ExitCode::FAILURE
        }
    }
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

/// The identity whose seed is in `seed_file`, as the identities file names it.
pub fn load_identity(
    seed_file: &std::path::Path,
    identities: &std::path::Path,
) -> anyhow::Result<flexcore_security::Identity> {
    let trust = flexcore_security::Trust::load(identities)?;
    let seed = std::fs::read_to_string(seed_file)
        .map_err(|e| anyhow::anyhow!("reading the NKey seed file {}: {e}", seed_file.display()))?;
    Ok(flexcore_security::Identity::from_seed(&seed, &trust)?)
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let (globals, output) = (&cli.globals, cli.globals.output);
    match &cli.command {
        // flexcore-dev parses the whole command line again, global options included.
        Command::Dev(_) | Command::Bench(_) => Err(crate::tools::exec(std::env::args_os())),
        Command::Plugin(command) => crate::plugin::run(&globals.nats()?, command, output).await,
        Command::Pipeline(command) => crate::pipeline::run(&globals.nats()?, command, output).await,
        Command::Apply(args) => crate::apply::run(&globals.nats()?, args, output).await,
        Command::Run(command) => crate::run::run(&globals.nats()?, command, output).await,
        Command::Schedule(command) => crate::schedule::run(&globals.nats()?, command, output).await,
        Command::Events(EventsCommand::Tail(args)) => crate::events::tail(&globals.nats()?, args, output).await,
        Command::Events(EventsCommand::List(args)) => crate::events::list(&globals.nats()?, args, output).await,
        Command::Status => crate::status::run(&globals.nats()?, output).await,
        Command::Projection(command) => crate::projection::run(&globals.nats()?, command, output).await,
        Command::Complete(args) => crate::complete::run(&globals.nats()?, args).await,
        Command::Security(command) => crate::security::run(command, output),
        Command::ApiKey(command) => crate::api_key::run(command, output),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            // Into a buffer first: clap_complete panics when its writer fails.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "flexctl", &mut script);
            script.extend_from_slice(crate::complete::dynamic(*shell).as_bytes());
            crate::write_stdout_raw(&script)
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
    fn dev_and_bench_take_any_arguments_for_flexcore_dev() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["flexctl"], args].concat()).unwrap();
        let cli = parse(&["bench", "commands", "--clients", "8", "--output", "json"]);
        let Command::Bench(forwarded) = cli.command else {
            panic!("not bench")
        };
        assert_eq!(forwarded.args, ["commands", "--clients", "8", "--output", "json"]);
        // Help is flexcore-dev's to give, with the options it has.
        assert!(matches!(parse(&["dev", "--help"]).command, Command::Dev(_)));
        assert!(matches!(
            parse(&["--nats-url", "nats://h:4222", "dev", "--exit-after-demo"]).command,
            Command::Dev(_)
        ));
    }

    #[test]
    fn only_dev_and_bench_commands_take_a_database_url() {
        assert!(Cli::try_parse_from(["flexctl", "--database-url", "postgres://h/db", "status"]).is_err());
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
        assert_eq!(cli.globals.nats_user.as_deref(), Some("flexctl"));
        assert_eq!(cli.globals.nats_password.as_ref().map(Secret::expose), Some("hunter2"));
        assert!(!format!("{cli:?}").contains("hunter2"));
    }
}
