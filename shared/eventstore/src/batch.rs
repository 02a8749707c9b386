//! The queue both group operations drain: concurrent callers queue requests, and a few
//! worker tasks each take what has queued up as one batch.

use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};

/// The receiving end shared by a group's worker tasks.
pub(crate) type SharedQueue<T> = Arc<Mutex<mpsc::Receiver<T>>>;

/// A queue of `capacity` requests and its shared receiving end.
pub(crate) fn queue<T>(capacity: usize) -> (mpsc::Sender<T>, SharedQueue<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (tx, Arc::new(Mutex::new(rx)))
}

/// The next batch: waits for one request, then takes what else has queued up (at most
/// `max` in all). Whoever holds the receiver drains what queued while the other workers
/// were busy: that is the batch. `None` once every sender is gone.
pub(crate) async fn next_batch<T>(queue: &SharedQueue<T>, max: usize) -> Option<Vec<T>> {
    let mut rx = queue.lock().await;
    let first = rx.recv().await?;
    let mut batch = Vec::with_capacity(max.clamp(1, 64));
    batch.push(first);
    while batch.len() < max {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    Some(batch)
}
