//! `flexcore-runner`: config, telemetry, NATS, the wasmtime sandbox, then the work loop
//! ([`flexcore_runner::worker::run`]) until SIGINT/SIGTERM. Started with the compile-check
//! argument it is instead the child that test-compiles one module under limits.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

pub(crate) fn main() -> anyhow::Result<()> {
    if let Some(code) = flexcore_runner::sandbox::run_compile_check_if_asked() {
        std::process::exit(code);
    }
    tokio::runtime::Runtime::new()?.block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let settings = flexcore_config::Settings::load().context("loading configuration")?;
    let _telemetry = flexcore_telemetry::init("flexcore-runner", &settings.telemetry)?;
    let config = flexcore_runner::worker::config_from(&settings.runner)?;
    let checker = std::env::current_exe().context("locating the runner binary (the compile check)")?;
    let mut sandbox_config = flexcore_runner::worker::sandbox_config_from(&settings.runner, Some(checker));
    sandbox_config.work_dir = settings.runner.work_dir.clone().map(Into::into);
    let sandbox =
        Arc::new(flexcore_runner::sandbox::Sandbox::new(sandbox_config).context("starting the wasmtime sandbox")?);
    let credentials = flexcore_service::security::credentials(&settings, flexcore_security::Role::Runner)?;
    let client =
        flexcore_service::connect::nats("flexcore-runner", &settings.nats, Some(&credentials.identity)).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(flexcore_service::stop_on_signal(
        shutdown.clone(),
        settings.runner.shutdown_grace,
    ));
    let checks = flexcore_runner::worker::metrics::checks(&client);
    flexcore_service::admin::spawn(&settings.admin.listen, "flexcore-runner", checks, shutdown.clone()).await?;
    let result = flexcore_runner::worker::run(client, sandbox, config, credentials, shutdown).await;
    match &result {
        Ok(()) => tracing::info!("flexcore-runner stopped"),
        Err(error) => tracing::error!(error = format!("{error:#}"), "flexcore-runner failed"),
    }
    result
}
