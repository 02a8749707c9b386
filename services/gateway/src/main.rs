//! `flexcore-gateway`: config, telemetry, NATS as the gateway's identity, then the HTTP API
//! until SIGINT/SIGTERM (a graceful drain within `gateway.shutdown_grace_ms`).

use anyhow::Context;
use flexcore_service::admin::CheckOutcome;
use tokio_util::sync::CancellationToken;

#[tokio::main]
pub(crate) async fn main() -> anyhow::Result<()> {
    let settings = flexcore_config::Settings::load().context("loading configuration")?;
    let _telemetry = flexcore_telemetry::init("flexcore-gateway", &settings.telemetry)?;
    let credentials = flexcore_service::security::credentials(&settings, flexcore_security::Role::Gateway)?;
    let nats = flexcore_service::connect::nats("flexcore-gateway", &settings.nats, Some(&credentials.identity)).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(flexcore_service::stop_on_signal(
        shutdown.clone(),
        settings.gateway.shutdown_grace,
    ));
    let gateway = flexcore_gateway::Gateway::new(
        &settings.gateway,
        credentials,
        nats.clone(),
        settings.nats.request_timeout,
        shutdown.clone(),
    )?;
    let auth = gateway.auth.clone();
    let checks = flexcore_service::admin::Checks::new()
        .nats(nats)
        .with_fn("jwks", move || {
            let loaded = auth.jwks_loaded();
            async move {
                match loaded {
                    None => CheckOutcome::ok("no gateway.jwt_jwks_url"),
                    Some(true) => CheckOutcome::ok("keys fetched"),
                    Some(false) => CheckOutcome::failed("the keys of gateway.jwt_jwks_url are not fetched yet"),
                }
            }
        });
    flexcore_service::admin::spawn(&settings.admin.listen, "flexcore-gateway", checks, shutdown.clone()).await?;
    let result = flexcore_gateway::serve(&settings.gateway.listen, gateway, shutdown).await;
    match &result {
        Ok(()) => tracing::info!("flexcore-gateway stopped"),
        Err(error) => tracing::error!(error = format!("{error:#}"), "flexcore-gateway failed"),
    }
    result
}
