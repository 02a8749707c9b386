//! `flexcore-command`: config, telemetry, connections, then [`flexcore_command::run`]
//! until SIGINT/SIGTERM.
//!
//! `flexcore-command setup` instead creates the JetStream streams and the plugin bucket
//! (or applies changed settings) and exits: run it as the `setup` identity before the
//! services start and after changing `streams.*`.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

// Decoding, deciding and encoding a command allocates many small JSON values; mimalloc
// serves them with less contention and fragmentation than the system allocator. (The
// multi-call binary, services/multicall, includes this file and sets it itself.)
#[cfg(not(flexcore_multicall))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
pub(crate) async fn main() -> anyhow::Result<()> {
    let settings = flexcore_config::Settings::load().context("loading configuration")?;
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("setup") => {
            let _telemetry = flexcore_telemetry::init("flexcore-setup", &settings.telemetry)?;
            flexcore_command::setup(&settings).await?;
            tracing::info!("streams and plugin bucket set up");
            return Ok(());
        }
        Some(other) => anyhow::bail!("unknown argument {other:?}: `flexcore-command` runs the service, `flexcore-command setup` creates the JetStream streams"),
    }
    let _telemetry = flexcore_telemetry::init("flexcore-command", &settings.telemetry)?;
    let (pool, nats) = flexcore_command::connect(&settings).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(flexcore_service::stop_on_signal(
        shutdown.clone(),
        settings.command.shutdown_grace,
    ));
    let checks = flexcore_command::service::metrics::checks(&nats, &pool);
    flexcore_service::admin::spawn(&settings.admin.listen, "flexcore-command", checks, shutdown.clone()).await?;
    let result = flexcore_command::run(&settings, nats, pool, shutdown).await;
    match &result {
        Ok(()) => tracing::info!("flexcore-command stopped"),
        Err(error) => tracing::error!(error = format!("{error:#}"), "flexcore-command failed"),
    }
    result
}
