//! `flexcore-runner`: config, telemetry, NATS, the wasmtime sandbox, then the work loop
//! ([`flexcore_runner::worker::run`]) until SIGINT/SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = flexcore_config::Settings::load().context("loading configuration")?;
    let _telemetry = flexcore_telemetry::init("flexcore-runner", &settings.telemetry)?;
    let config = flexcore_runner::worker::config_from(&settings.runner)?;
    let sandbox =
        Arc::new(flexcore_runner::sandbox::Sandbox::new(Default::default()).context("starting the wasmtime sandbox")?);
    let client = flexcore_service::connect::nats("flexcore-runner", &settings.nats).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(flexcore_service::stop_on_signal(
        shutdown.clone(),
        std::time::Duration::from_millis(settings.runner.shutdown_grace_ms),
    ));
    let checks = flexcore_runner::worker::metrics::checks(&client);
    flexcore_service::admin::spawn(&settings.admin.listen, "flexcore-runner", checks, shutdown.clone()).await?;
    let result = flexcore_runner::worker::run(client, sandbox, config, shutdown).await;
    match &result {
        Ok(()) => tracing::info!("flexcore-runner stopped"),
        Err(error) => tracing::error!(error = format!("{error:#}"), "flexcore-runner failed"),
    }
    result
}
