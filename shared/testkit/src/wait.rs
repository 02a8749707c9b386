//! Waiting for a condition with a deadline: tests synchronise on observable state,
//! never on `sleep`.

use std::future::Future;
use std::time::Duration;

use anyhow::anyhow;
use tokio::time::Instant;

/// How often a condition is re-evaluated.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Evaluates `condition` every [`POLL_INTERVAL`] until it yields `true`; fails, naming
/// `what`, if that has not happened within `timeout` (a condition that hangs counts
/// against the deadline too).
///
/// ```no_run
/// # async fn demo(counter: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> anyhow::Result<()> {
/// use std::sync::atomic::Ordering;
/// use std::time::Duration;
/// flexcore_testkit::wait_until(Duration::from_secs(5), "three events handled", || {
///     let counter = counter.clone();
///     async move { counter.load(Ordering::SeqCst) == 3 }
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    try_wait_until(timeout, what, || {
        let check = condition();
        async move { Ok(check.await) }
    })
    .await
}

/// Like [`wait_until`] for a fallible condition: an `Err` counts as "not yet", and the
/// last error is attached to the timeout error.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) -> anyhow::Result<()> {
/// use std::time::Duration;
/// flexcore_testkit::try_wait_until(Duration::from_secs(5), "a row in t", || {
///     let pool = pool.clone();
///     async move {
///         let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t").fetch_one(&pool).await?;
///         Ok(n > 0)
///     }
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn try_wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match tokio::time::timeout_at(deadline, condition()).await {
            Ok(Ok(true)) => return Ok(()),
            Ok(Ok(false)) | Err(_) => {}
            Ok(Err(err)) => last_error = Some(err),
        }
        if Instant::now() >= deadline {
            let message = format!("timed out after {timeout:?} waiting for {what}");
            return Err(match last_error {
                Some(err) => err.context(message),
                None => anyhow!(message),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
