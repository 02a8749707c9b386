//! `flexcore-projection`: config, telemetry, connections, then [`flexcore_projection::run`]
//! until SIGINT/SIGTERM.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = flexcore_config::Settings::load().context("loading configuration")?;
    let _telemetry = flexcore_telemetry::init("flexcore-projection", &settings.telemetry)?;
    let (pool, nats) = flexcore_projection::connect(&settings).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let result = flexcore_projection::run(&settings, nats, pool, shutdown).await;
    match &result {
        Ok(()) => tracing::info!("flexcore-projection stopped"),
        Err(error) => tracing::error!(error = format!("{error:#}"), "flexcore-projection failed"),
    }
    result
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested; draining in-flight queries");
    shutdown.cancel();
}
