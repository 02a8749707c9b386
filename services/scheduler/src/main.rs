//! `flexcore-scheduler`: config, telemetry, NATS, then [`flexcore_scheduler::run`] until
//! SIGINT/SIGTERM.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

#[tokio::main]
pub(crate) async fn main() -> anyhow::Result<()> {
    let settings = flexcore_config::Settings::load().context("loading configuration")?;
    let _telemetry = flexcore_telemetry::init("flexcore-scheduler", &settings.telemetry)?;
    let credentials = flexcore_service::security::credentials(&settings, flexcore_security::Role::Scheduler)?;
    let nats =
        flexcore_service::connect::nats("flexcore-scheduler", &settings.nats, Some(&credentials.identity)).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(flexcore_service::stop_on_signal(
        shutdown.clone(),
        settings.scheduler.shutdown_grace,
    ));
    let checks = flexcore_scheduler::metrics::checks(&nats);
    flexcore_service::admin::spawn(&settings.admin.listen, "flexcore-scheduler", checks, shutdown.clone()).await?;
    let result = flexcore_scheduler::run(
        &settings.scheduler,
        nats,
        credentials,
        settings.nats.request_timeout,
        flexcore_scheduler::Clock::System,
        shutdown,
    )
    .await;
    match &result {
        Ok(()) => tracing::info!("flexcore-scheduler stopped"),
        Err(error) => tracing::error!(error = format!("{error:#}"), "flexcore-scheduler failed"),
    }
    result
}
