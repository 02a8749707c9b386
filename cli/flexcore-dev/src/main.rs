//! `flexcore-dev`: parses the command line, installs logging (stderr), runs the command.
//! Usually started by flexctl (`flexctl dev`, `flexctl bench`), which becomes this
//! process and keeps its name. Everything else lives in the library (see its `# Layout`).

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = flexcore_dev::cli::Cli::parse();
    let _telemetry = match flexcore_telemetry::init(
        "flexctl",
        &flexctl::cli::telemetry_settings(cli.globals.otlp_endpoint.as_deref()),
    ) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: cannot initialise logging: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    match flexcore_dev::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The user-facing outcome, printed even when logging is filtered out.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
