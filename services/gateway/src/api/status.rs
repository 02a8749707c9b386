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

/// A service's answer to a probe query.
async fn probe(gateway: &Gateway, query: &str) -> (Value, Option<flexcore_contracts::queries::QueryOk>) {
    let started = Instant::now();
    match gateway
        .client
        .query_raw(query, &json!({}), &flexcore_client::Retry::once())
        .await
    {
        Ok(ok) => (
            json!({"up": true, "latency_ms": started.elapsed().as_secs_f64() * 1000.0}),
            Some(ok),
        ),
        Err(error) => {
            // The details (a service's internal message) go to the log, not to callers.
            tracing::info!(%error, query, "status probe failed");
            let said = match &error {
                flexcore_client::ClientError::Refused { error, .. } => format!("refused ({})", error.code),
                flexcore_client::ClientError::Unanswered { kind, .. } => format!("no answer ({kind:?})"),
                _ => "no usable answer".to_owned(),
            };
            (json!({"up": false, "error": said}), None)
        }
    }
}

/// Whether the command service answers: a request on a subject that is no command, which
/// it refuses (`unknown_subject`) without deciding anything; any answer means it is up.
async fn command_probe(gateway: &Gateway) -> Value {
    let started = Instant::now();
    let request = gateway
        .nats
        .request("flexcore.cmd.status.probe".to_owned(), bytes::Bytes::from_static(b"{}"));
    match tokio::time::timeout(std::time::Duration::from_secs(2), request).await {
        Ok(Ok(_)) => json!({"up": true, "latency_ms": started.elapsed().as_secs_f64() * 1000.0}),
        Ok(Err(error)) => {
            tracing::info!(%error, "command service probe failed");
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
    let ((projection, stats), (_, projections), command, queue) = tokio::join!(
        probe(gateway, "stats.get"),
        probe(gateway, "projection.list"),
        command_probe(gateway),
        queue(gateway),
    );
    let data = |ok: Option<flexcore_contracts::queries::QueryOk>| {
        ok.and_then(|ok| serde_json::from_str::<Value>(ok.data.as_str()).ok())
            .unwrap_or(Value::Null)
    };
    json!({
        "gateway": {"version": env!("CARGO_PKG_VERSION")},
        "nats_version": gateway.nats.server_info().version,
        "command": command,
        "projection": projection,
        "schedulers": gateway.presence.schedulers(),
        "runners": gateway.presence.runners(),
        "projections": data(projections),
        "queue": queue,
        "stats": data(stats),
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
