//! Plumbing every FlexCore service binary shares.
//!
//! - [`connect`]: the Postgres pool and NATS client, opened from config.
//! - [`serve`]: the request loop of a queue-group service (bounded concurrency, a drain
//!   on shutdown, a grace period for requests in flight).
//! - [`stop_on_signal`]: cancels a token on SIGINT or SIGTERM.
//! - [`admin`]: the admin HTTP server (`/health/live`, `/health/ready`, `/metrics`).
//! - [`metrics`]: the process's Prometheus metrics, by service.
//! - [`reply`]: answering a request, a reply too large for the server becoming an error.

pub mod admin;
pub mod connect;
pub mod metrics;
pub mod reply;

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
    /// How long shutdown waits for requests in flight.
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
    what: &str,
    limits: ServeLimits,
    shutdown: CancellationToken,
    handle: H,
) -> anyhow::Result<()>
where
    H: Fn(Message) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut subscriber = client.queue_subscribe(subject.to_owned(), queue.to_owned()).await?;
    tracing::info!(subject, queue, "serving {what}");
    let max_in_flight = limits.max_in_flight.max(1);
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut draining = false;
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled(), if !draining => {
                // Stop new deliveries; what is already buffered is still taken and answered.
                draining = true;
                if let Err(error) = subscriber.drain().await {
                    tracing::warn!(%error, "drain failed; buffered {what} may go unanswered");
                    break;
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
        tokio::spawn(async move {
            handling.await;
            drop(permit);
        });
    }
    let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
    match tokio::time::timeout(limits.shutdown_grace, permits.acquire_many(all)).await {
        Ok(_) => tracing::info!("in-flight {what} drained"),
        Err(_) => tracing::warn!(grace = ?limits.shutdown_grace, "shutdown grace elapsed with {what} in flight"),
    }
    client.flush().await?;
    Ok(())
}

/// Cancels `shutdown` on SIGINT (Ctrl-C) or SIGTERM.
pub async fn stop_on_signal(shutdown: CancellationToken) {
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
    tracing::info!("shutdown requested; draining work in flight");
    shutdown.cancel();
}
