//! `flexcore-gateway`: FlexCore's HTTP API under `/api/v1/flexcore`, a client of the other
//! services over NATS like any other. It keeps no state of its own: commands go to the
//! command service and queries to the projection service through the typed client, signed
//! with the gateway's identity on behalf of the authenticated caller; live streams are
//! ordered consumers of the event and log streams, each message's signature checked.
//!
//! # Layout
//! - this file: [`Gateway`] (shared state), [`router`], [`serve`], the per-request layer
//!   (correlation id, authentication, rate limit, timeout).
//! - [`auth`]: API keys, JWTs, anonymous mode, rate limits.
//! - [`problem`]: RFC 7807 documents and the error-code → status table.
//! - [`api`]: the resources.
//! - [`presence`]: runners and schedulers heard (for `/status`).
//! - [`openapi`]: the OpenAPI 3.1 document and its reference page.
//! - [`metrics`]: requests by route and status, durations, the gateway's own time.
//! - [`console`]: the web console at `/`.

pub mod api;
pub mod auth;
pub mod console;
pub mod metrics;
pub mod openapi;
pub mod presence;
pub mod problem;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use flexcore_config::GatewaySettings;
use flexcore_contracts::ErrorCode;
use flexcore_security::{Credentials, Trust};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::{AuthConfig, Authenticator, Principal, RateLimiter};
use crate::problem::Problem;

/// Failed authentications a peer address may make a second on average, and at once.
pub const FAILED_AUTH_PER_SECOND: u32 = 10;
/// See [`FAILED_AUTH_PER_SECOND`].
pub const FAILED_AUTH_BURST: u32 = 100;

/// The header carrying a request's correlation id (given by the client, else new).
pub const CORRELATION_HEADER: &str = "Flexcore-Correlation-Id";
/// The header (request and response) carrying a global position: after a command, the
/// position of its last event; on a query, the position the answer must include.
pub const POSITION_HEADER: &str = "Consistency-Position";

tokio::task_local! {
    /// The path and correlation id of the request being handled (for problem documents).
    static REQUEST: (String, String);
}

/// The request being handled: its path and correlation id.
pub fn current_request() -> Option<(String, String)> {
    REQUEST.try_with(Clone::clone).ok()
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct Gateway {
    /// The typed client, signing as the gateway.
    pub client: flexcore_client::Client,
    /// The NATS connection (streams).
    pub nats: async_nats::Client,
    /// The identities file: whose signatures streamed messages must carry.
    pub trust: Trust,
    /// Who is calling.
    pub auth: Authenticator,
    /// Requests per principal.
    pub limiter: RateLimiter,
    /// Failed authentications per peer address.
    pub failures: RateLimiter,
    /// Runners and schedulers heard.
    pub presence: Arc<presence::Presence>,
    /// Open live streams.
    pub streams: Arc<Semaphore>,
    /// Open live streams by caller.
    pub open_streams: Arc<parking_lot::Mutex<std::collections::HashMap<String, usize>>>,
    /// Module uploads in progress.
    pub uploads: Arc<Semaphore>,
    /// The settings.
    pub settings: GatewaySettings,
    /// Cancelled at shutdown (live streams end).
    pub shutdown: CancellationToken,
}

impl Gateway {
    /// The gateway's state from its settings, credentials and NATS connection.
    pub fn new(
        settings: &GatewaySettings,
        credentials: Credentials,
        nats: async_nats::Client,
        request_timeout: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let path = |s: &str| (!s.trim().is_empty()).then(|| s.trim().into());
        let text = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        let anonymous = text(&settings.anonymous_role)
            .map(|r| r.parse())
            .transpose()
            .map_err(|e: String| anyhow::anyhow!("gateway.anonymous_role: {e}"))?;
        let auth = Authenticator::load(&AuthConfig {
            api_keys_file: path(&settings.api_keys_file),
            hs256_secret_file: path(&settings.jwt_hs256_secret_file),
            jwks_file: path(&settings.jwt_jwks_file),
            jwks_url: text(&settings.jwt_jwks_url),
            jwks_refresh: Duration::from_secs(settings.jwt_jwks_refresh_seconds),
            issuer: text(&settings.jwt_issuer),
            audience: text(&settings.jwt_audience),
            anonymous,
        })?;
        auth.start(shutdown.clone());
        if let Some(role) = anonymous {
            tracing::warn!(%role, "anonymous access is on (gateway.anonymous_role): for local development only");
        }
        let presence = presence::Presence::start(nats.clone(), credentials.trust.clone(), shutdown.clone());
        let client = flexcore_client::Client::new(nats.clone())
            .with_identity(credentials.identity)
            .with_timeout(request_timeout);
        Ok(Arc::new(Self {
            client,
            nats,
            trust: credentials.trust,
            auth,
            limiter: RateLimiter::new(settings.rate_limit_per_second, settings.rate_limit_burst),
            failures: RateLimiter::new(FAILED_AUTH_PER_SECOND, FAILED_AUTH_BURST),
            presence,
            streams: Arc::new(Semaphore::new(settings.max_streams)),
            open_streams: Arc::default(),
            uploads: Arc::new(Semaphore::new(settings.max_uploads)),
            settings: settings.clone(),
            shutdown,
        }))
    }
}

/// The whole HTTP surface.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let max_body = gateway.settings.max_body_bytes;
    api::routes()
        .merge(console::routes())
        .fallback(|request: Request| async move { Problem::no_route(request.uri().path()) })
        .layer(axum::middleware::from_fn_with_state(gateway.clone(), per_request))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(gateway)
}

/// What the layer found out about the caller, for the handlers.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// The request's correlation id.
    pub correlation_id: String,
}

/// Correlation id, CORS, authentication, rate limit and timeout of every request.
async fn per_request(State(gateway): State<Arc<Gateway>>, mut request: Request, next: Next) -> Response {
    let correlation_id = request
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
    let path = request.uri().path().to_owned();
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed_origin = origin.filter(|o| o.to_str().is_ok_and(|o| cors_allows(&gateway, o)));
    let cors_allowed = allowed_origin.is_some();
    let preflight = request.method() == Method::OPTIONS && allowed_origin.is_some();
    let scope = (path.clone(), correlation_id.clone());
    // With traces exported, one span per request, continuing the caller's `traceparent`:
    // the typed client carries it on into the commands and queries it sends over NATS.
    let span = if flexcore_telemetry::propagation::enabled() {
        let span = tracing::info_span!("http.request", method = %request.method(), path = %path, correlation_id = %correlation_id);
        let traceparent = request
            .headers()
            .get(flexcore_telemetry::propagation::TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .filter(|v| flexcore_telemetry::propagation::valid(v));
        flexcore_telemetry::propagation::set_parent_traceparent(&span, traceparent);
        span
    } else {
        tracing::Span::none()
    };
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", axum::extract::MatchedPath::as_str)
        .to_owned();
    let handled = REQUEST.scope(
        scope,
        tracing::Instrument::instrument(
            async {
                if preflight {
                    return StatusCode::NO_CONTENT.into_response();
                }
                // A browser's state-changing request from another origin is refused before
                // anything else (CSRF: a page elsewhere posting to this API).
                if let Err(problem) = browser_guard(&request, cors_allowed) {
                    return problem.into_response();
                }
                // Unauthenticated: the liveness of the gateway, the API's description, the
                // console's sign-in page and assets.
                let open = path == "/health"
                    || path == "/api/v1/openapi.json"
                    || path == "/api/v1/docs"
                    || console::is_open(&path);
                let in_console = console::is_console(&path);
                if !open {
                    let authorization = request.headers().get(header::AUTHORIZATION).map(|v| v.to_str());
                    // The console's session cookie stands in for the header on the console's
                    // pages and on reads (its live streams); writes to the API need the header.
                    let cookie = (authorization.is_none() && (in_console || request.method() == Method::GET))
                        .then(|| console::session(request.headers()))
                        .flatten();
                    let principal = match (authorization, cookie) {
                        (Some(Err(_)), _) => Err(auth::AuthError::Malformed),
                        (Some(Ok(value)), _) => gateway.auth.authenticate(Some(value)),
                        (None, Some(token)) => gateway.auth.authenticate(Some(&format!("Bearer {token}"))),
                        // Anonymous access serves loopback host names only: a public name that
                        // resolves to this machine (DNS rebinding) gets no ambient authority.
                        (None, None) if !loopback_host(request.headers()) => gateway
                            .auth
                            .authenticate(None)
                            .and(Err(auth::AuthError::AnonymousNotLoopback)),
                        (None, None) => gateway.auth.authenticate(None),
                    };
                    let principal = match principal {
                        Ok(principal) => principal,
                        // A browser on the console signs in instead.
                        Err(_) if in_console => return console::sign_in_redirect(&path),
                        Err(error) => {
                            // Failed attempts are limited per peer address: beyond the
                            // limit a 429, and no log line (a flood cannot fill the logs).
                            let peer = request
                                .extensions()
                                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                                .map(|c| c.0.ip().to_string());
                            if let Some(Err(wait)) = peer.as_deref().map(|ip| gateway.failures.take(ip)) {
                                return Problem::new(
                                    StatusCode::TOO_MANY_REQUESTS,
                                    "rate_limited",
                                    "too many requests with failed authentication from this address",
                                )
                                .with_header(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)))
                                .into_response();
                            }
                            tracing::info!(%path, %error, peer = peer.as_deref().unwrap_or("-"), "request not authenticated");
                            return Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", error.to_string())
                                .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
                                .into_response();
                        }
                    };
                    if let Err(wait) = gateway.limiter.take(&principal.name) {
                        let seconds = wait.as_secs().max(1);
                        return Problem::new(
                            StatusCode::TOO_MANY_REQUESTS,
                            "rate_limited",
                            format!(
                                "more than {} requests a second for {}; retry after {seconds} s",
                                gateway.settings.rate_limit_per_second, principal.name
                            ),
                        )
                        .with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
                        .into_response();
                    }
                    request.extensions_mut().insert(Caller {
                        principal,
                        correlation_id: correlation_id.clone(),
                    });
                }
                let timeout = gateway.settings.request_timeout;
                if is_upload(&request) {
                    // Read as it arrives by the handler, within gateway.max_module_bytes and
                    // gateway.upload_timeout_ms (408), then stored and registered (504 here).
                    let upload = gateway.settings.upload_timeout;
                    let (parts, body) = request.into_parts();
                    let limit = usize::try_from(gateway.settings.max_module_bytes)
                        .unwrap_or(usize::MAX)
                        .saturating_add(gateway.settings.max_body_bytes);
                    let body = axum::body::Body::new(http_body_util::Limited::new(body, limit));
                    let request = Request::from_parts(parts, body);
                    return match tokio::time::timeout(upload + timeout, next.run(request)).await {
                        Ok(response) => as_problem(response).await,
                        Err(_) => services_timeout(upload + timeout),
                    };
                }
                // The body is read here, so that a client too slow to send it (408) is told
                // apart from services too slow to answer (504).
                let deadline = tokio::time::Instant::now() + timeout;
                let (parts, body) = request.into_parts();
                let limit = gateway.settings.max_body_bytes;
                let body = match tokio::time::timeout_at(deadline, axum::body::to_bytes(body, limit)).await {
                    Ok(Ok(bytes)) => bytes,
                    Ok(Err(error)) => return body_error(&error, limit).into_response(),
                    Err(_) => {
                        return Problem::new(
                            StatusCode::REQUEST_TIMEOUT,
                            "timeout",
                            format!(
                                "the request body was not received within {} ms (gateway.request_timeout_ms)",
                                timeout.as_millis()
                            ),
                        )
                        .into_response()
                    }
                };
                let request = Request::from_parts(parts, axum::body::Body::from(body));
                match tokio::time::timeout_at(deadline, next.run(request)).await {
                    Ok(response) => as_problem(response).await,
                    Err(_) => services_timeout(timeout),
                }
            },
            span,
        ),
    );
    let mut response = metrics::measured(&route, handled).await;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&correlation_id) {
        headers.insert(CORRELATION_HEADER, value);
    }
    if let Some(origin) = allowed_origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        if preflight {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(
                    "authorization, content-type, idempotency-key, if-match, consistency-position, last-event-id, flexcore-correlation-id",
                ),
            );
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(
                "etag, location, link, consistency-position, flexcore-correlation-id, retry-after",
            ),
        );
    }
    response
}

/// Whether `origin` may call the API from a browser (`gateway.cors_origins`).
fn cors_allows(gateway: &Gateway, origin: &str) -> bool {
    gateway
        .settings
        .cors_origins
        .iter()
        .any(|allowed| allowed == origin || allowed == "*")
}

/// Refuses a state-changing request (not GET, HEAD or OPTIONS) that a browser sent from
/// another origin: its `Origin` is neither this gateway's own (its `host:port` equal to
/// `Host`) nor one of `gateway.cors_origins`. Requests without `Origin` (curl, SDKs) pass.
fn browser_guard(request: &Request, cors_allowed: bool) -> Result<(), Problem> {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) || cors_allowed {
        return Ok(());
    }
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, host)| host.trim_end_matches('/'));
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    if origin_host.is_some() && origin_host == host {
        return Ok(());
    }
    Err(Problem::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "a cross-origin request from a browser is refused: its Origin is not in gateway.cors_origins",
    ))
}

/// Whether the request's `Host` is a loopback name (`localhost`, `127.0.0.1`, `[::1]`,
/// with any port).
fn loopback_host(headers: &axum::http::HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    auth::loopback_name(name)
}

/// The 504 of a request the services did not answer in time.
fn services_timeout(timeout: Duration) -> Response {
    Problem::new(
        StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Unavailable.as_str(),
        format!(
            "the services did not answer within {} ms (gateway.request_timeout_ms); a command may still be decided: retry with the same Idempotency-Key",
            timeout.as_millis()
        ),
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    .into_response()
}

/// Whether a request is a module upload (`POST /plugins`, multipart), whose body the
/// handler reads as it arrives.
fn is_upload(request: &Request) -> bool {
    let path = request.uri().path();
    request.method() == Method::POST
        && (path.strip_prefix(api::BASE) == Some("/plugins") || path == "/console/plugins")
        && api::upload::is_multipart(request.headers())
}

/// A body that could not be read: over `gateway.max_body_bytes` (413), or cut off (400).
fn body_error(error: &axum::Error, limit: usize) -> Problem {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge.as_str(),
                format!("the request body is larger than {limit} bytes (gateway.max_body_bytes)"),
            );
        }
        source = e.source();
    }
    Problem::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::ValidationFailed.as_str(),
        format!("the request body could not be read: {error}"),
    )
}

/// An error response axum made itself (a refused extractor: body too large or unreadable,
/// a path that does not parse, a method a route does not have) as a problem document.
async fn as_problem(response: Response) -> Response {
    let status = response.status();
    // Problem documents, and the console's own pages (HTML for people), stay as they are.
    let is_problem = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().starts_with(b"application/problem+json") || v.as_bytes().starts_with(b"text/html")
    });
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    let (code, detail) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the request body is larger than gateway.max_body_bytes".to_owned(),
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this resource does not take that method".to_owned(),
        ),
        StatusCode::NOT_FOUND => ("not_found", "no such resource".to_owned()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", text.clone()),
        s if s.is_client_error() => ("validation_failed", text.clone()),
        _ => ("internal", "the gateway failed to answer (logged)".to_owned()),
    };
    if status.is_server_error() {
        tracing::error!(%status, body = %text, "the gateway answered an error of its own");
    }
    let status = if status == StatusCode::INTERNAL_SERVER_ERROR {
        StatusCode::BAD_GATEWAY
    } else {
        status
    };
    let problem = Problem::new(status, code, detail);
    match allow {
        Some(allow) => problem.with_header(header::ALLOW, allow).into_response(),
        None => problem.into_response(),
    }
}

/// Serves `gateway` on `listen` until `shutdown`, then drains: new connections are
/// refused, live streams end, requests in flight get `gateway.shutdown_grace_ms`.
pub async fn serve(listen: &str, gateway: Arc<Gateway>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = bind(listen).await?;
    serve_on(listener, gateway, shutdown).await
}

/// Binds `listen` (`host:port`), naming the setting when it cannot.
pub async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind the gateway to {listen:?} (gateway.listen / FLEXCORE__GATEWAY__LISTEN)"))
}

/// How long a client may take to send a request's headers (a connection that sends them
/// slower is closed: slow-loris clients cannot hold connections).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// [`serve`] on a bound listener: hyper's HTTP/1.1 and HTTP/2 with a header-read timeout,
/// at most `gateway.max_connections` connections at once (further ones wait in the
/// listen backlog), each request knowing its peer's address.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let addr: SocketAddr = listener.local_addr()?;
    let grace = gateway.settings.shutdown_grace;
    let connections = Arc::new(Semaphore::new(gateway.settings.max_connections.max(1)));
    let app = router(gateway);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tracing::info!(%addr, "gateway listening (/api/v1/flexcore, /api/v1/openapi.json, /health)");
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.context("connection limit")?,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            tower::ServiceExt::oneshot(app.clone(), request)
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, error = %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    // New connections are refused from here; requests in flight get the grace period.
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "requests still in flight at the end of the shutdown grace; stopping"
        );
    }
    Ok(())
}

#[cfg(test)]
mod guard_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request(method: Method, headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().method(method).uri("/api/v1/flexcore/pipelines");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn cross_origin_writes_from_browsers_are_refused() {
        let evil = [("host", "127.0.0.1:8080"), ("origin", "https://evil.example")];
        assert!(browser_guard(&request(Method::POST, &evil), false).is_err());
        assert!(browser_guard(&request(Method::DELETE, &evil), false).is_err());
        assert!(browser_guard(&request(Method::POST, &[("host", "a:1"), ("origin", "null")]), false).is_err());
        // Reads, allowed origins, the gateway's own origin and clients without Origin pass.
        assert!(browser_guard(&request(Method::GET, &evil), false).is_ok());
        assert!(browser_guard(&request(Method::POST, &evil), true).is_ok());
        let own = [("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")];
        assert!(browser_guard(&request(Method::POST, &own), false).is_ok());
        assert!(browser_guard(&request(Method::POST, &[("host", "127.0.0.1:8080")]), false).is_ok());
    }

    #[test]
    fn loopback_hosts_are_told_from_others() {
        let host = |h: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_str(h).unwrap());
            loopback_host(&headers)
        };
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "127.0.0.2",
        ] {
            assert!(host(ok), "{ok}");
        }
        for no in [
            "rebind.attacker.example:8080",
            "10.0.0.1:8080",
            "localhost.evil.example",
            "[::2]:80",
        ] {
            assert!(!host(no), "{no}");
        }
        assert!(!loopback_host(&axum::http::HeaderMap::new()));
    }
}
