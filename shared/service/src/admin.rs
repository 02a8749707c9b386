//! The small per-service admin HTTP server (config section `admin`, key `listen`):
//!
//! - `GET /health/live`: `200 {"status":"up","service":"flexcore-…"}` while the process runs.
//! - `GET /health/ready`: `200` when every [`Check`] passes, `503` otherwise, with
//!   `{"status":"ready"|"unready","service":…,"checks":[{"name":…,"ok":…,"detail":…},…]}`.
//! - `GET /metrics`: the process's Prometheus metrics ([`crate::metrics`]), text format 0.0.4.
//!
//! A service builds its [`Checks`] (NATS, Postgres, its JetStream streams and consumers,
//! its own) and calls [`spawn`] after connecting; the server stops on the service's
//! shutdown token. [`router`] is public so more endpoints can be merged in.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Default bound of one check: a check that has not answered by then fails, so a probe
/// gets a `503` with a reason instead of hanging.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    /// Whether the dependency is usable.
    pub ok: bool,
    /// A short human-readable reason ("connected", an error message, …).
    pub detail: String,
}

impl CheckOutcome {
    /// A passing outcome.
    pub fn ok(detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            detail: detail.into(),
        }
    }

    /// A failing outcome.
    pub fn failed(detail: impl Into<String>) -> Self {
        Self {
            ok: false,
            detail: detail.into(),
        }
    }
}

/// One readiness check. Implement it for a type, or use [`Checks::with_fn`] for a closure.
pub trait Check: Send + Sync + 'static {
    /// The name shown in the `checks` list (`"nats"`, `"postgres"`, …).
    fn name(&self) -> &str;

    /// Runs the check once. It is bounded by [`Checks::timeout`] from outside, so it
    /// need not time itself out.
    fn check(&self) -> BoxFuture<'_, CheckOutcome>;
}

/// The NATS connection: ok while the client's state is `Connected`.
#[derive(Debug, Clone)]
pub struct NatsCheck(pub async_nats::Client);

impl Check for NatsCheck {
    fn name(&self) -> &str {
        "nats"
    }

    fn check(&self) -> BoxFuture<'_, CheckOutcome> {
        let state = self.0.connection_state();
        Box::pin(async move {
            let detail = state.to_string();
            if state == async_nats::connection::State::Connected {
                CheckOutcome::ok(detail)
            } else {
                CheckOutcome::failed(detail)
            }
        })
    }
}

/// Postgres: ok when `SELECT 1` succeeds on the pool.
#[derive(Debug, Clone)]
pub struct PostgresCheck(pub PgPool);

impl Check for PostgresCheck {
    fn name(&self) -> &str {
        "postgres"
    }

    fn check(&self) -> BoxFuture<'_, CheckOutcome> {
        Box::pin(async move {
            match sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&self.0).await {
                Ok(_) => CheckOutcome::ok("ok"),
                Err(error) => CheckOutcome::failed(error.to_string()),
            }
        })
    }
}

/// A JetStream stream, or a durable consumer of it: ok while the server knows it (a
/// service whose stream or consumer is gone can take no work, though NATS is connected).
#[derive(Debug, Clone)]
pub struct JetStreamCheck {
    name: String,
    js: async_nats::jetstream::Context,
    stream: String,
    consumer: Option<String>,
}

impl JetStreamCheck {
    /// The stream `stream` (check name `stream:<stream>`).
    pub fn stream(client: async_nats::Client, stream: &str) -> Self {
        Self {
            name: format!("stream:{stream}"),
            js: async_nats::jetstream::new(client),
            stream: stream.to_owned(),
            consumer: None,
        }
    }

    /// The durable consumer `consumer` of `stream` (check name `consumer:<stream>/<consumer>`).
    pub fn consumer(client: async_nats::Client, stream: &str, consumer: &str) -> Self {
        Self {
            name: format!("consumer:{stream}/{consumer}"),
            js: async_nats::jetstream::new(client),
            stream: stream.to_owned(),
            consumer: Some(consumer.to_owned()),
        }
    }
}

impl Check for JetStreamCheck {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> BoxFuture<'_, CheckOutcome> {
        Box::pin(async move {
            match &self.consumer {
                None => match self.js.get_stream(&self.stream).await {
                    Ok(_) => CheckOutcome::ok("exists"),
                    Err(error) => CheckOutcome::failed(error.to_string()),
                },
                Some(consumer) => match self.js.get_stream_no_info(&self.stream).await {
                    Ok(stream) => match stream.consumer_info(consumer).await {
                        Ok(_) => CheckOutcome::ok("exists"),
                        Err(error) => CheckOutcome::failed(error.to_string()),
                    },
                    Err(error) => CheckOutcome::failed(error.to_string()),
                },
            }
        })
    }
}

/// A check made of a name and a closure.
struct FnCheck<F> {
    name: String,
    check: F,
}

impl<F, Fut> Check for FnCheck<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = CheckOutcome> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> BoxFuture<'_, CheckOutcome> {
        Box::pin((self.check)())
    }
}

/// The readiness checks of a service, run concurrently on every `/health/ready`, each
/// bounded by [`Checks::timeout`] (default [`DEFAULT_CHECK_TIMEOUT`]). Reported in the
/// order they were added.
#[derive(Clone)]
pub struct Checks {
    checks: Vec<Arc<dyn Check>>,
    timeout: Duration,
}

impl Default for Checks {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Checks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checks")
            .field("checks", &self.checks.iter().map(|c| c.name()).collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Checks {
    /// No checks (ready is then always `200`).
    pub fn new() -> Self {
        Self {
            checks: Vec::new(),
            timeout: DEFAULT_CHECK_TIMEOUT,
        }
    }

    /// Adds the NATS connection check ([`NatsCheck`]).
    pub fn nats(self, client: async_nats::Client) -> Self {
        self.with(NatsCheck(client))
    }

    /// Adds the Postgres `SELECT 1` check ([`PostgresCheck`]).
    pub fn postgres(self, pool: PgPool) -> Self {
        self.with(PostgresCheck(pool))
    }

    /// Adds a check that the JetStream stream `stream` exists ([`JetStreamCheck::stream`]).
    pub fn stream(self, client: async_nats::Client, stream: &str) -> Self {
        self.with(JetStreamCheck::stream(client, stream))
    }

    /// Adds a check that the durable consumer `consumer` of `stream` exists
    /// ([`JetStreamCheck::consumer`]).
    pub fn consumer(self, client: async_nats::Client, stream: &str, consumer: &str) -> Self {
        self.with(JetStreamCheck::consumer(client, stream, consumer))
    }

    /// Adds a check that this process serves `what` (a [`crate::serve`] loop is
    /// subscribed): unready while the service still waits (for its streams, migrations)
    /// before it takes requests, and once it stopped taking them.
    pub fn serving(self, what: &'static str) -> Self {
        self.with_fn(format!("serving:{what}"), move || async move {
            if Serving::is(what) {
                CheckOutcome::ok("subscribed")
            } else {
                CheckOutcome::failed(format!(
                    "not taking {what} (starting, waiting for its streams, or stopping)"
                ))
            }
        })
    }

    /// Adds a check.
    pub fn with(mut self, check: impl Check) -> Self {
        self.checks.push(Arc::new(check));
        self
    }

    /// Adds a check named `name` that calls `check`.
    pub fn with_fn<F, Fut>(self, name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckOutcome> + Send + 'static,
    {
        self.with(FnCheck {
            name: name.into(),
            check,
        })
    }

    /// Sets how long one check may take before it counts as failed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs every check concurrently, each bounded by the timeout.
    pub async fn run(&self) -> Vec<CheckReport> {
        let timeout = self.timeout;
        futures::future::join_all(self.checks.iter().map(|check| async move {
            let outcome = match tokio::time::timeout(timeout, check.check()).await {
                Ok(outcome) => outcome,
                Err(_) => CheckOutcome::failed(format!("timed out after {timeout:?}")),
            };
            CheckReport {
                name: check.name().to_owned(),
                ok: outcome.ok,
                detail: outcome.detail,
            }
        }))
        .await
    }
}

/// One entry of `checks` in the `/health/ready` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// The check's name.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// Why.
    pub detail: String,
}

/// The `/health/live` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Liveness {
    /// Always `"up"`.
    pub status: &'static str,
    /// The service name, e.g. `flexcore-command`.
    pub service: &'static str,
}

/// The `/health/ready` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// `"ready"` when every check passed, else `"unready"`.
    pub status: &'static str,
    /// The service name, e.g. `flexcore-command`.
    pub service: &'static str,
    /// Every check's result, in the order they were added.
    pub checks: Vec<CheckReport>,
}

/// Shared state of the handlers.
#[derive(Debug, Clone)]
struct AdminState {
    service: &'static str,
    checks: Checks,
}

/// The admin routes (`/health/live`, `/health/ready`, `/metrics`) of `service`.
pub fn router(service: &'static str, checks: Checks) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(AdminState { service, checks })
}

async fn metrics() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match crate::metrics::render() {
        Ok(text) => ([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding the metrics failed\n").into_response(),
    }
}

async fn live(State(state): State<AdminState>) -> Json<Liveness> {
    Json(Liveness {
        status: "up",
        service: state.service,
    })
}

async fn ready(State(state): State<AdminState>) -> (StatusCode, Json<Readiness>) {
    let checks = state.checks.run().await;
    let all_ok = checks.iter().all(|check| check.ok);
    let (code, status) = if all_ok {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unready")
    };
    (
        code,
        Json(Readiness {
            status,
            service: state.service,
            checks,
        }),
    )
}

/// Starts the admin server of `service` on `listen` (`host:port`, from `admin.listen`)
/// and serves until `shutdown`. An empty `listen` starts nothing and returns `None`;
/// otherwise returns the bound address (port `0` picks a free one). Fails, naming the
/// address, if it cannot be bound.
pub async fn spawn(
    listen: &str,
    service: &'static str,
    checks: Checks,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    let listen = listen.trim();
    if listen.is_empty() {
        tracing::debug!(service, "admin server off (admin.listen is empty)");
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("cannot bind the admin server to {listen:?} (admin.listen / FLEXCORE__ADMIN__LISTEN)")
    })?;
    let addr = listener
        .local_addr()
        .with_context(|| format!("reading the bound address of the admin server on {listen:?}"))?;
    let app = router(service, checks);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        match served {
            Ok(()) => tracing::info!(%addr, "admin server stopped"),
            Err(error) => tracing::error!(%addr, %error, "admin server failed"),
        }
    });
    tracing::info!(%addr, service, "admin server listening (/health/live, /health/ready, /metrics)");
    Ok(Some(addr))
}

/// The request loops of this process that are subscribed, by what they serve: a loop
/// counts while its guard lives.
#[derive(Debug)]
pub struct Serving(&'static str);

static SERVING: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());

impl Serving {
    /// Marks a loop serving `what` until the guard is dropped.
    pub fn start(what: &'static str) -> Self {
        SERVING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(what);
        Self(what)
    }

    /// Whether a loop serving `what` is subscribed.
    pub fn is(what: &str) -> bool {
        SERVING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&what)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let mut serving = SERVING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = serving.iter().position(|w| *w == self.0) {
            serving.swap_remove(at);
        }
    }
}
