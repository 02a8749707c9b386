//! Group read: the per-aggregate reads of concurrent commands are collected by a few
//! reader tasks and answered by one query per batch, as the group committer does for
//! appends. A command service whose cached states are often stale (several replicas
//! behind one queue group) reads each command's aggregates before deciding; one query per
//! command doubled Postgres's CPU per command, one per batch costs a fraction of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::batch::{self, Awaiting, Expected, SharedQueue};
use crate::error::StoreError;
use crate::model::RecordedEvent;

/// Reader tasks (each holds at most one connection while reading).
const READERS: usize = 2;
/// Most aggregates read by one query.
const BATCH_MAX_AGGREGATES: usize = 512;

type Reply = oneshot::Sender<Result<Vec<RecordedEvent>, StoreError>>;
/// A queued read: the aggregates and the versions after which their events are wanted.
type Queued = (Vec<(Uuid, u64)>, Reply);

/// Handle to the reader tasks; cheap to clone.
#[derive(Clone)]
pub(crate) struct GroupReader {
    tx: mpsc::Sender<Queued>,
}

impl GroupReader {
    /// Starts the reader tasks on `pool`. They stop when every handle is dropped. A
    /// reader holds its batch open up to `linger` while more commands are announced in
    /// `expected` than it holds reads (another command deciding may be about to read).
    pub(crate) fn start(pool: PgPool, expected: Arc<Expected>, linger: Duration) -> Self {
        let (tx, rx) = batch::queue(BATCH_MAX_AGGREGATES * READERS);
        for _ in 0..READERS {
            tokio::spawn(reader(pool.clone(), rx.clone(), Arc::clone(&expected), linger));
        }
        Self { tx }
    }

    /// The events of each of `wanted`'s aggregates after its version, aggregate by
    /// aggregate in the order asked, each in version order.
    pub(crate) async fn read(&self, wanted: Vec<(Uuid, u64)>) -> Result<Vec<RecordedEvent>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send((wanted, reply)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

async fn reader(pool: PgPool, rx: SharedQueue<Queued>, expected: Arc<Expected>, linger: Duration) {
    // Requests name one to a few aggregates each: a batch of this many stays within
    // BATCH_MAX_AGGREGATES in all but odd cases (and a larger query is still correct).
    let max = BATCH_MAX_AGGREGATES / 4;
    while let Some(batch) = batch::next_batch_expecting(&rx, max, &expected, Awaiting::BeyondBatch, linger).await {
        if let [(wanted, _)] = batch.as_slice() {
            let result = crate::store::read_aggregates_with(&pool, wanted).await;
            if let Some((_, reply)) = batch.into_iter().next() {
                let _ = reply.send(result);
            }
            continue;
        }
        let merged = merge(batch.iter().map(|(wanted, _)| wanted.as_slice()));
        match crate::store::read_aggregates_with(&pool, &merged).await {
            Ok(events) => {
                let mut shares = Shares::new(events, batch.iter().map(|(wanted, _)| wanted.as_slice()));
                for (wanted, reply) in batch {
                    let _ = reply.send(Ok(shares.take(&wanted)));
                }
            }
            Err(error) => {
                // Each request on its own, so every caller gets its own answer or error.
                tracing::debug!(%error, size = batch.len(), "batched aggregate read failed; reading one by one");
                for (wanted, reply) in batch {
                    let _ = reply.send(crate::store::read_aggregates_with(&pool, &wanted).await);
                }
            }
        }
    }
}

/// One query's aggregates for several requests: each aggregate once, after the lowest
/// version any request asked for.
fn merge<'a>(requests: impl Iterator<Item = &'a [(Uuid, u64)]>) -> Vec<(Uuid, u64)> {
    let mut after: HashMap<Uuid, u64> = HashMap::new();
    let mut order = Vec::new();
    for &(id, version) in requests.flatten() {
        after
            .entry(id)
            .and_modify(|v| *v = (*v).min(version))
            .or_insert_with(|| {
                order.push(id);
                version
            });
    }
    order.into_iter().map(|id| (id, after[&id])).collect()
}

/// A batch's events, handed out request by request: an aggregate's events are moved to
/// the last request that wants them and cloned for the others.
struct Shares {
    events: HashMap<Uuid, Vec<RecordedEvent>>,
    /// Requests still to take each aggregate's events.
    takers: HashMap<Uuid, usize>,
}

impl Shares {
    fn new<'a>(events: Vec<RecordedEvent>, requests: impl Iterator<Item = &'a [(Uuid, u64)]>) -> Self {
        let mut takers: HashMap<Uuid, usize> = HashMap::new();
        for request in requests {
            let mut ids: Vec<Uuid> = request.iter().map(|(id, _)| *id).collect();
            ids.sort_unstable();
            ids.dedup();
            for id in ids {
                *takers.entry(id).or_default() += 1;
            }
        }
        let mut by_aggregate: HashMap<Uuid, Vec<RecordedEvent>> = HashMap::new();
        for event in events {
            by_aggregate.entry(event.aggregate_id).or_default().push(event);
        }
        Self {
            events: by_aggregate,
            takers,
        }
    }

    /// One request's answer: its aggregates in the order asked (each once), each from
    /// after the version it asked for.
    fn take(&mut self, wanted: &[(Uuid, u64)]) -> Vec<RecordedEvent> {
        let mut answer = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for &(id, after) in wanted {
            if !seen.insert(id) {
                continue;
            }
            let last = self.takers.get_mut(&id).is_none_or(|n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
            let events = if last {
                self.events.remove(&id).unwrap_or_default()
            } else {
                self.events.get(&id).cloned().unwrap_or_default()
            };
            answer.extend(events.into_iter().filter(|e| e.version > after));
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_reads_each_aggregate_once_after_the_lowest_version_asked() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let requests = [vec![(a, 3), (b, 0)], vec![(c, 1), (a, 1)], vec![(b, 2)]];
        let merged = merge(requests.iter().map(Vec::as_slice));
        assert_eq!(merged, vec![(a, 1), (b, 0), (c, 1)]);
    }

    fn event(aggregate_id: Uuid, version: u64) -> RecordedEvent {
        RecordedEvent {
            global_position: version,
            transaction_id: 1,
            event_id: Uuid::now_v7(),
            aggregate_type: "pipeline".into(),
            aggregate_id,
            version,
            event_type: "pipeline.paused".into(),
            schema_version: 1,
            data: flexcore_contracts::OpaqueJson::null(),
            metadata: Default::default(),
            recorded_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn each_request_gets_its_aggregates_in_its_order_from_its_version_on() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let first = vec![(b, 1), (a, 0)];
        let second = vec![(a, 2)];
        let events = vec![event(a, 1), event(a, 2), event(a, 3), event(b, 1), event(b, 2)];
        let mut shares = Shares::new(events, [first.as_slice(), second.as_slice()].into_iter());
        let versions = |events: Vec<RecordedEvent>| -> Vec<(Uuid, u64)> {
            events.iter().map(|e| (e.aggregate_id, e.version)).collect()
        };
        assert_eq!(versions(shares.take(&first)), vec![(b, 2), (a, 1), (a, 2), (a, 3)]);
        assert_eq!(versions(shares.take(&second)), vec![(a, 3)]);
        assert!(
            shares.events.is_empty(),
            "the last taker moved every aggregate's events out"
        );
    }
}
