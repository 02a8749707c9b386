//! The command line: flexctl's global options, then `dev` or `bench`.

use clap::{Args, Parser, Subcommand};
use flexctl::cli::Globals;

use crate::bench::cli::BenchCommand;
use crate::dev::DevArgs;

/// FlexCore's development tools, run as `flexctl dev` and `flexctl bench`.
#[derive(Debug, Parser)]
#[command(
    name = "flexcore-dev",
    version,
    about = "FlexCore's development tools: flexctl dev and flexctl bench"
)]
pub struct Cli {
    /// flexctl's global options.
    #[command(flatten)]
    pub globals: Globals,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--database-url`, the one Postgres option of flexcore-dev, flattened into the commands
/// that use it (`dev` and `bench commands`) so its help is the same, and true, for both.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL server: for `dev`, the stack's database (FlexCore's event store and
    /// read models; used if it answers, created if missing, else a private server is
    /// started on its port); for `bench commands`, the server of the raw INSERT ceiling
    /// (phase 2). The rest of flexctl speaks only NATS and never connects to Postgres.
    #[arg(
        long = "database-url",
        env = "FLEXCORE__DATABASE__URL",
        default_value = "postgres://postgres@127.0.0.1:5432/flexcore",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub url: String,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a whole local FlexCore: Postgres and NATS (found or started), the five
    /// services, the example plugins, a demo pipeline and schedule. Ctrl-C, SIGTERM or
    /// SIGHUP stops it; a service that exits is restarted.
    Dev(DevArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Dev(args) => crate::dev::run(&cli.globals, args).await,
        Command::Bench(command) => crate::bench::cli::run(&cli.globals, command).await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use flexctl::cli::Output;

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
            "--database-url",
            "postgres://u@h:5433/db",
            "--output",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.globals.output, Output::Json);
        let Command::Bench(BenchCommand::Commands(args)) = cli.command else {
            panic!("not bench commands")
        };
        assert_eq!(args.clients, 8);
        assert_eq!(args.duration, Duration::from_secs(3));
        assert_eq!(args.warmup, Duration::ZERO);
        assert!(args.raw_only && !args.skip_raw);
        assert_eq!(args.database.url, "postgres://u@h:5433/db");
    }

    #[test]
    fn flexctls_global_options_come_before_or_after_the_command() {
        let cli = Cli::try_parse_from(["flexctl", "--nats-url", "nats://h:1", "dev", "--output", "json"]).unwrap();
        assert_eq!(cli.globals.nats_url, "nats://h:1");
        assert_eq!(cli.globals.output, Output::Json);
        assert!(matches!(cli.command, Command::Dev(_)));
    }

    #[test]
    fn dev_and_bench_commands_share_one_true_database_url_option() {
        use clap::CommandFactory as _;
        let mut command = Cli::command();
        let help = |command: &mut clap::Command, path: &[&str]| {
            let mut sub = command.clone();
            for name in path {
                sub = sub.find_subcommand_mut(name).unwrap().clone();
            }
            sub.render_long_help().to_string()
        };
        let dev = help(&mut command, &["dev"]);
        let bench = help(&mut command, &["bench", "commands"]);
        for text in [&dev, &bench] {
            assert!(text.contains("--database-url"), "{text}");
            assert!(text.contains("the stack's database"), "{text}");
            assert!(!text.contains("never reads FlexCore's own"), "{text}");
        }
        let cli = Cli::try_parse_from(["flexctl", "dev", "--database-url", "postgres://h/fc"]).unwrap();
        let Command::Dev(args) = cli.command else {
            panic!("not dev")
        };
        assert_eq!(args.database.url, "postgres://h/fc");
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
