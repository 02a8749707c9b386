//! `flexcore-projection`: config, telemetry, connections, then [`flexcore_projection::run`]
//! until SIGINT/SIGTERM.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

#[tokio::main]
pub(crate) async fn main() -> anyhow::Result<()> {
    let settings = flexcore_config::Settings::load().context("loading configuration")?;
    let _telemetry = flexcore_telemetry::init("flexcore-projection", &settings.telemetry)?;
    let (databases, nats) = flexcore_projection::connect(&settings).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(flexcore_service::stop_on_signal(
        shutdown.clone(),
        settings.projection.shutdown_grace,
    ));
    let checks = flexcore_projection::metrics::checks(&settings, &nats, &databases);
    flexcore_service::admin::spawn(&settings.admin.listen, "flexcore-projection", checks, shutdown.clone()).await?;
    let result = flexcore_projection::run(&settings, nats, databases, shutdown).await;
    match &result {
        Ok(()) => tracing::info!("flexcore-projection stopped"),
        Err(error) => tracing::error!(error = format!("{error:#}"), "flexcore-projection failed"),
    }
    result
}
