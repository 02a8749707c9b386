//! `flexctl`: parses the command line, installs logging (stderr), runs the command.
//! Everything else lives in the library (see its `# Layout`).

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
pub(crate) async fn main() -> ExitCode {
    let cli = flexctl::cli::Cli::parse();
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
    match flexctl::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The user-facing outcome, printed even when logging is filtered out.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
