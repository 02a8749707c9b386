//! `flexctl`: parses the command line and runs the command (logging on stderr).
//! Everything else lives in the library (see its `# Layout`).

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
pub(crate) async fn main() -> ExitCode {
    let cli = flexctl::cli::Cli::parse();
    let otlp_endpoint = cli.globals.otlp_endpoint.clone();
    flexctl::cli::main_with(otlp_endpoint.as_deref(), flexctl::cli::run(cli)).await
}
