//! `GET /api/v1/flexcore/status` (what `flexctl status` shows) and `GET /health` (the
//! gateway and the services it depends on, unauthenticated, for load balancers).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use flexcore_contracts::subjects;
use flexcore_security::permissions::RUNNER_CONSUMER;
use flexcore_security::ApiRole;
use serde_json::{json, Value};

use super::require;
use crate::problem::Problem;
use crate::{Caller, Gateway};

/// A query's `data`, or null when it has no answer (why goes to the log: a service's
/// internal message is not for callers).
async fn query_data(gateway: &Gateway, query: &str) -> Value {
    match gateway
        .client
        .query_raw(query, &json!({}), &flexcore_client::Retry::once())
        .await
    {
        Ok(ok) => serde_json::from_str(ok.data.as_str()).unwrap_or(Value::Null),
        Err(error) => {
            tracing::info!(%error, query, "status query failed");
            Value::Null
        }
    }
}

/// Whether a service answers on `subject`, a subject it serves that names no command or
/// query, which it refuses (`unknown_subject`) without deciding anything: any answer means
/// it is up, and names its version (`Flexcore-Service`).
async fn service_probe(gateway: &Gateway, subject: &'static str) -> Value {
    let started = Instant::now();
    let request = gateway.nats.request(subject, bytes::Bytes::from_static(b"{}"));
    match tokio::time::timeout(std::time::Duration::from_secs(2), request).await {
        Ok(Ok(reply)) => {
            let mut up = json!({"up": true, "latency_ms": started.elapsed().as_secs_f64() * 1000.0});
            if let Some(version) = flexcore_service::reply::service_of(reply.headers.as_ref()) {
                up["version"] = version.into();
            }
            up
        }
        Ok(Err(error)) => {
            tracing::info!(%error, subject, "service probe failed");
            json!({"up": false, "error": "no answer (no responders)"})
        }
        Err(_) => json!({"up": false, "error": "no answer within 2 s"}),
    }
}

/// The work queue's depth from the runners' consumer.
async fn queue(gateway: &Gateway) -> Value {
    let js = async_nats::jetstream::new(gateway.nats.clone());
    let info = async {
        let stream = js.get_stream(subjects::WORK_STREAM).await.ok()?;
        let mut consumer = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(RUNNER_CONSUMER)
            .await
            .ok()?;
        let info = consumer.info().await.ok()?;
        Some(json!({"waiting": info.num_pending, "in_progress": info.num_ack_pending}))
    };
    info.await.unwrap_or(Value::Null)
}

/// `GET /status`.
pub async fn status(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, Problem> {
    require(&caller.principal, ApiRole::Viewer, "reading the status")?;
    Ok(Json(snapshot(&gateway).await).into_response())
}

/// What `GET /status` answers (and the console's overview shows).
pub async fn snapshot(gateway: &Gateway) -> Value {
    let (stats, projections, command, projection, queue) = tokio::join!(
        query_data(gateway, "stats.get"),
        query_data(gateway, "projection.list"),
        service_probe(gateway, "flexcore.cmd.status.probe"),
        service_probe(gateway, "flexcore.qry.status.probe"),
        queue(gateway),
    );
    json!({
        "gateway": {"version": env!("CARGO_PKG_VERSION")},
        "nats_version": gateway.nats.server_info().version,
        "command": command,
        "projection": projection,
        "schedulers": gateway.presence.schedulers(),
        "runners": gateway.presence.runners(),
        "projections": projections,
        "queue": queue,
        "stats": stats,
    })
}

/// `GET /health`: 200 while the gateway is connected to NATS, 503 otherwise.
pub async fn health(State(gateway): State<Arc<Gateway>>) -> Response {
    let connected = gateway.nats.connection_state() == async_nats::connection::State::Connected;
    let stopping = gateway.shutdown.is_cancelled();
    let status = if connected && !stopping {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if status == StatusCode::OK { "ok" } else { "unavailable" },
        "nats": if connected { "connected" } else { "disconnected" },
        "stopping": stopping,
    });
    (status, Json(body)).into_response()
}

/// `GET /api/v1/openapi.json` (unauthenticated): the document, built once.
pub async fn openapi() -> Response {
    static DOCUMENT: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    let body = DOCUMENT
        .get_or_init(|| bytes::Bytes::from(serde_json::to_vec(&crate::openapi::document()).unwrap_or_default()));
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body.clone()).into_response()
}

/// `GET /api/v1/docs` (unauthenticated): the reference page reading the document.
pub async fn reference_page() -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        ],
        crate::openapi::PAGE,
    )
        .into_response()
}
