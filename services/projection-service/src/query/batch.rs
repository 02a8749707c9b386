//! `<view>.get` by id, batched: the gets of a view that arrive while its statements run
//! are answered together by the next one (`WHERE key = ANY($1)`), so that under load one
//! statement serves many (Postgres's cost per statement — the round trip, the executor's
//! start, the relation locks — and the client's are paid once per batch), while a lone
//! get still goes out at once: nothing waits on a timer.

use std::sync::Arc;

use flexcore_contracts::ErrorBody;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

use super::views::{self, Target};

/// Most gets one statement answers.
const MAX_BATCH: usize = 64;

/// Statements of one view in flight at once: while they run, the next batch gathers.
const IN_FLIGHT: usize = 2;

/// Where a get's document (none: no such id) goes.
type Reply = oneshot::Sender<Result<Option<String>, ErrorBody>>;

/// The batchers, one per entity view; they stop when this is dropped.
pub struct Gets {
    queues: [mpsc::UnboundedSender<(Uuid, Reply)>; 4],
}

impl Gets {
    /// Starts a batcher per view, reading `pool`.
    pub fn start(pool: &PgPool) -> Self {
        Self {
            queues: [Target::Plugin, Target::Pipeline, Target::Run, Target::Schedule].map(|target| {
                let (queue, requests) = mpsc::unbounded_channel();
                tokio::spawn(batch(pool.clone(), target, requests));
                queue
            }),
        }
    }

    /// The document of `id` in `target`'s view (enriched as [`views::get_many`] does), or
    /// none when the view has no such id.
    pub async fn get(&self, target: Target, id: Uuid) -> Result<Option<String>, ErrorBody> {
        let (reply, answer) = oneshot::channel();
        let stopped = || ErrorBody::new(flexcore_contracts::ErrorReason::Unavailable, "the service is stopping");
        self.queues[target as usize].send((id, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Takes the gets queued for `target` a batch at a time (at most [`IN_FLIGHT`] statements
/// running), until every sender is gone.
async fn batch(pool: PgPool, target: Target, mut requests: mpsc::UnboundedReceiver<(Uuid, Reply)>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = requests.recv().await {
        // Waiting for a slot lets more gets queue behind the first.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            answer(&pool, target, batch).await;
            drop(slot);
        });
    }
}

async fn answer(pool: &PgPool, target: Target, batch: Vec<(Uuid, Reply)>) {
    let mut ids: Vec<Uuid> = batch.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    match views::get_many(pool, target, &ids).await {
        Ok(docs) => {
            for (id, reply) in batch {
                // An asker that went away (its request timed out) needs no answer.
                let _ = reply.send(Ok(docs.get(&id).cloned()));
            }
        }
        Err(error) => {
            for (_, reply) in batch {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
