//! The gateway's request metrics (`flexcore_http_*`, families in
//! `flexcore_service::metrics::gateway`): each request counted by route and status, its
//! duration by route, and the part of it the gateway itself spent — the duration less the
//! time its commands and queries waited on the services ([`upstream`]).

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{LazyLock, RwLock};
use std::time::{Duration, Instant};

use flexcore_service::metrics::{gateway, HistogramHandle};

tokio::task_local! {
    /// The time the request being handled has waited on the services so far.
    static UPSTREAM: Cell<Duration>;
}

/// Duration histograms by route, created on a route's first request.
static DURATIONS: LazyLock<RwLock<HashMap<String, HistogramHandle>>> = LazyLock::new(Default::default);

/// Runs `request` (the rest of the request's handling), then records it.
pub async fn measured<F: Future<Output = axum::response::Response>>(
    route: &str,
    request: F,
) -> axum::response::Response {
    let started = Instant::now();
    let (response, waited) = UPSTREAM
        .scope(Cell::new(Duration::ZERO), async {
            let response = request.await;
            (response, UPSTREAM.with(Cell::get))
        })
        .await;
    let took = started.elapsed();
    let metrics = gateway();
    metrics.requests.get(route, response.status().as_str()).inc();
    duration(route).observe(took.as_secs_f64());
    metrics.own.observe(took.saturating_sub(waited).as_secs_f64());
    response
}

fn duration(route: &str) -> HistogramHandle {
    let cached = DURATIONS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(route)
        .cloned();
    cached.unwrap_or_else(|| {
        let histogram = gateway().duration(route);
        DURATIONS
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(route.to_owned(), histogram.clone());
        histogram
    })
}

/// Awaits `call` (a command or query round trip) and counts its time as waited on the
/// services.
pub async fn upstream<T>(call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = call.await;
    let _ = UPSTREAM.try_with(|waited| waited.set(waited.get() + started.elapsed()));
    out
}
