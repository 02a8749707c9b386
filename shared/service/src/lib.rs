//! Plumbing every FlexCore service binary shares.
//!
//! - [`connect`]: the Postgres pool and NATS client, opened from config.
//! - [`security`]: this process's identity and the identities file, from config.
//! - [`serve`]: the request loop of a queue-group service (bounded concurrency, a drain
//!   on shutdown, a grace period for requests in flight).
//! - [`stop_on_signal`]: cancels a token on SIGINT or SIGTERM, and ends the process when
//!   the shutdown grace runs out (or on a second signal), naming what was abandoned.
//! - [`in_flight`]: counts of work in progress, for that last log line.
//! - [`admin`]: the admin HTTP server (`/health/live`, `/health/ready`, `/metrics`).
//! - [`metrics`]: the process's Prometheus metrics, by service.
//! - [`reply`]: answering a request, a reply too large for the server becoming an error.

pub mod admin;
pub mod connect;
pub mod in_flight;
pub mod metrics;
pub mod reply;
pub mod security;
pub mod streams;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Message};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Bounds of a request loop.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Most requests handled at once; more wait.
    pub max_in_flight: usize,
    /// The service's shutdown grace: requests in flight get most of it.
    pub shutdown_grace: Duration,
}

/// Serves `subject` in queue group `queue` until `shutdown`: one task per request
/// (bounded), then stops taking new requests (a subscription drain: what is already
/// buffered is still handled) and waits, bounded, for those in flight. `what` names the
/// requests in logs ("commands", "queries"). `handle` must answer every request itself.
pub async fn serve<H, F>(
    client: Client,
    subject: &str,
    queue: &str,
    what: &'static str,
    limits: ServeLimits,
    shutdown: CancellationToken,
    handle: H,
) -> anyhow::Result<()>
where
    H: Fn(Message) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut subscriber = client.queue_subscribe(subject.to_owned(), queue.to_owned()).await?;
    // The subscription is written to the server with the client's next flush: flushing
    // now puts it there before this replica says it serves (a request sent right after the
    // log line or readiness found no responders once in CI).
    if let Err(error) = tokio::time::timeout(FLUSH_TIMEOUT, client.flush())
        .await
        .map_err(|_| "timed out".to_owned())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        tracing::warn!(%error, "could not confirm the subscription to {subject}; serving anyway");
    }
    tracing::info!(subject, queue, "serving {what}");
    let _serving = admin::Serving::start(what);
    let max_in_flight = limits.max_in_flight.max(1);
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut draining = false;
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled(), if !draining => {
                // Stop new deliveries; what is already buffered is still taken and answered.
                // With NATS unreachable the drain cannot be confirmed: stop taking requests.
                draining = true;
                match tokio::time::timeout(FLUSH_TIMEOUT, subscriber.drain()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "drain failed; buffered {what} go unanswered");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!("NATS did not confirm the drain; buffered {what} go unanswered");
                        break;
                    }
                }
                continue;
            }
            m = subscriber.next() => match m {
                Some(m) => m,
                None => break,
            },
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        // Boxed: a handler's future can be kilobytes (every await point's state), and
        // tokio moves a task's future several times while spawning and completing it; a
        // box is moved instead (measured: a third of flexcore-command's instructions were
        // those copies, docs/benchmarks.md).
        let handling = Box::pin(handle(message));
        let tracked = in_flight::track(what);
        tokio::spawn(async move {
            handling.await;
            drop(tracked);
            drop(permit);
        });
    }
    let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
    // Most of the grace: the rest is for what follows before the process exits (the
    // signal handler ends it when the whole grace is over).
    let wait = limits.shutdown_grace.mul_f64(0.8);
    match tokio::time::timeout(wait, permits.acquire_many(all)).await {
        Ok(_) => tracing::info!("in-flight {what} drained"),
        Err(_) => tracing::warn!(grace = ?limits.shutdown_grace, "shutdown grace elapsed with {what} in flight"),
    }
    // Replies already sent may sit in the client's buffer: give them a moment to go out,
    // but do not wait on a server that is gone.
    if tokio::time::timeout(FLUSH_TIMEOUT, client.flush()).await.is_err() {
        tracing::warn!("NATS did not confirm the last replies in time; some may be lost");
    }
    Ok(())
}

/// How long shutdown waits for NATS to take what the client still buffers.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Cancels `shutdown` on SIGINT (Ctrl-C) or SIGTERM; then gives the service `grace` to
/// stop on its own. When the grace runs out (or on a second signal) it ends the process,
/// whatever NATS and Postgres are doing, logging what was still in flight ([`in_flight`]):
/// a service never outlives its grace period.
pub async fn stop_on_signal(shutdown: CancellationToken, grace: Duration) {
    signal().await;
    tracing::info!(?grace, "shutdown requested; draining work in flight");
    shutdown.cancel();
    let forced = tokio::select! {
        () = tokio::time::sleep(grace) => "the shutdown grace elapsed",
        () = signal() => "a second signal came",
    };
    let abandoned = in_flight::summary();
    tracing::warn!(
        abandoned = if abandoned.is_empty() {
            "nothing"
        } else {
            abandoned.as_str()
        },
        "{forced}: exiting now"
    );
    // A supervisor can tell a shutdown that gave work up from a clean one.
    std::process::exit(if abandoned.is_empty() { 0 } else { 1 });
}

/// SIGINT or SIGTERM.
async fn signal() {
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
}
