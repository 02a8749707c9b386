//! The command line: flexctl's global options, then `dev` or `bench`.

use clap::{Parser, Subcommand};
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

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a whole local FlexCore: Postgres and NATS (found or started), the four
    /// services, the example plugins, a demo pipeline and schedule. Ctrl-C stops it.
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
        assert_eq!(args.database_url, "postgres://u@h:5433/db");
    }

    #[test]
    fn flexctls_global_options_come_before_or_after_the_command() {
        let cli = Cli::try_parse_from(["flexctl", "--nats-url", "nats://h:1", "dev", "--output", "json"]).unwrap();
        assert_eq!(cli.globals.nats_url, "nats://h:1");
        assert_eq!(cli.globals.output, Output::Json);
        assert!(matches!(cli.command, Command::Dev(_)));
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
