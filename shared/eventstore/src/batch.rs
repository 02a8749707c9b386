//! The queue both group operations drain: concurrent callers queue requests, and a few
//! worker tasks each take what has queued up as one batch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex, Notify};

/// The receiving end shared by a group's worker tasks.
pub(crate) type SharedQueue<T> = Arc<Mutex<mpsc::Receiver<T>>>;

/// A queue of `capacity` requests and its shared receiving end.
pub(crate) fn queue<T>(capacity: usize) -> (mpsc::Sender<T>, SharedQueue<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (tx, Arc::new(Mutex::new(rx)))
}

/// Waits for one request, then takes what else has queued up (at most `max` in all).
/// Whoever holds the receiver drains what queued while the other workers were busy: that
/// is the batch. `None` once every sender is gone.
async fn drain<T>(rx: &mut mpsc::Receiver<T>, max: usize) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let mut batch = Vec::with_capacity(max.clamp(1, 64));
    batch.push(first);
    take_queued(rx, &mut batch, max);
    Some(batch)
}

/// Moves what is queued into `batch`, up to `max` in all.
fn take_queued<T>(rx: &mut mpsc::Receiver<T>, batch: &mut Vec<T>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
}

/// Commands announced as deciding: each will most likely queue an append soon, and may
/// queue reads before it. A worker may hold its batch open a little for them.
#[derive(Debug, Default)]
pub(crate) struct Expected {
    count: AtomicUsize,
    /// Woken whenever an announcement ends.
    ended: Notify,
}

/// One announced command; it stops counting when its append is queued or when dropped.
#[derive(Debug)]
pub struct Announced(Arc<Expected>);

impl Expected {
    pub(crate) fn announce(self: &Arc<Self>) -> Announced {
        self.count.fetch_add(1, Ordering::AcqRel);
        Announced(Arc::clone(self))
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify_waiters();
    }
}

/// Whose announcements a batch waits for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Awaiting {
    /// Every announced command: the batch's own requests are no longer announced
    /// (appends: an announcement ends when its append is queued).
    All,
    /// Announced commands beyond one per request in the batch (reads: a command reads
    /// while announced, so the batch's own requests count among the announced).
    BeyondBatch,
}

/// The next batch: what has queued up (see [`drain`]), then, while the batch has room
/// and announced commands are still to come, up to `linger` more for them. The batch
/// closes when it is full, when none is awaited any more, or at the deadline. Nothing
/// awaited, no wait: a lone request is taken at once.
pub(crate) async fn next_batch_expecting<T>(
    queue: &SharedQueue<T>,
    max: usize,
    expected: &Expected,
    awaiting: Awaiting,
    linger: Duration,
) -> Option<Vec<T>> {
    let mut rx = queue.lock().await;
    let mut batch = drain(&mut rx, max).await?;
    if linger.is_zero() {
        return Some(batch);
    }
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < max {
        let ended = expected.ended.notified();
        tokio::pin!(ended);
        // Registered before the count is read, so an announcement ending in between
        // still wakes this wait.
        ended.as_mut().enable();
        let announced = expected.count();
        // Taken after the count: a request is queued before its announcement ends, so
        // the requests of the commands no longer counted are all in the queue by now.
        take_queued(&mut rx, &mut batch, max);
        let awaited = match awaiting {
            Awaiting::All => announced,
            Awaiting::BeyondBatch => announced.saturating_sub(batch.len()),
        };
        if awaited == 0 || batch.len() >= max {
            break;
        }
        tokio::select! {
            biased;
            item = rx.recv() => match item {
                Some(item) => batch.push(item),
                None => break,
            },
            () = &mut ended => {}
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    Some(batch)
}
