//! `flexctl`: parses the command line and runs the command (logging on stderr).
//! Everything else lives in the library (see its `# Layout`).

use std::process::ExitCode;

#[tokio::main]
pub(crate) async fn main() -> ExitCode {
    let cli = match flexctl::error::parse_args::<flexctl::cli::Cli>() {
        Ok(cli) => cli,
        Err(status) => return status,
    };
    let otlp_endpoint = cli.globals.otlp_endpoint.clone();
    flexctl::cli::main_with(otlp_endpoint.as_deref(), flexctl::cli::run(cli)).await
}
