//! `flexctl`: the FlexCore operator CLI.
//!
//! # Layout
//! - [`cli`]: the command line (clap), shared options, duration parsing.
//! - [`bench`]: benchmarks (`flexctl bench commands`): the NATS command phase, the raw
//!   Postgres ceiling, and the report.

mod bench;
mod cli;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "flexctl=info,warn".into()),
        )
        .init();
    let result = match &cli.command {
        cli::Command::Bench(cli::BenchCommand::Commands(args)) => bench::commands(&cli, args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
