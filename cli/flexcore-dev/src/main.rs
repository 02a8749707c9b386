//! `flexcore-dev`: parses the command line and runs the command (logging on stderr).
//! Usually started by flexctl (`flexctl dev`, `flexctl bench`), which becomes this
//! process and keeps its name. Everything else lives in the library (see its `# Layout`).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match flexctl::error::parse_args::<flexcore_dev::cli::Cli>() {
        Ok(cli) => cli,
        Err(status) => return status,
    };
    let otlp_endpoint = cli.globals.otlp_endpoint.clone();
    flexctl::cli::main_with(otlp_endpoint.as_deref(), flexcore_dev::cli::run(cli)).await
}
