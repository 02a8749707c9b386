//! Group commit: appends from many concurrent commands are collected by a few writer
//! tasks and written by one `flexcore_append` call per batch — one round trip and one
//! commit for up to `batch_max` commands — so throughput grows with concurrency instead
//! of being bound by one fsync per command.

use std::sync::Arc;

use serde::Deserialize;
use sqlx::types::Json;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

use crate::error::StoreError;
use crate::model::{AppendOutcome, AppendRequest, StoredCommandRef};

/// Group-commit tuning.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommitConfig {
    /// Writer tasks (each holds at most one connection while writing).
    pub writers: usize,
    /// Most commands per transaction.
    pub batch_max: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self {
            writers: 4,
            batch_max: 64,
        }
    }
}

type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;

/// Handle to the writer tasks; cheap to clone.
#[derive(Clone)]
pub struct GroupCommitter {
    tx: mpsc::Sender<(AppendRequest, Reply)>,
}

impl GroupCommitter {
    /// Starts `config.writers` writer tasks on `pool`. They stop when every handle is dropped.
    pub fn start(pool: PgPool, config: GroupCommitConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.batch_max.max(1) * config.writers.max(1) * 4);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..config.writers.max(1) {
            tokio::spawn(writer(pool.clone(), rx.clone(), config.batch_max.max(1)));
        }
        Self { tx }
    }

    /// Appends one command's writes; resolves when its batch has committed.
    pub async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send((request, reply)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

async fn writer(pool: PgPool, rx: Arc<Mutex<mpsc::Receiver<(AppendRequest, Reply)>>>, batch_max: usize) {
    loop {
        let mut batch = Vec::with_capacity(batch_max);
        {
            // Whoever holds the receiver drains what has queued up while the other writers
            // were committing: that is the batch.
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(item) => batch.push(item),
                None => return,
            }
            while batch.len() < batch_max {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
        }
        let (requests, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        match write_batch(&pool, &requests).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) if requests.len() > 1 => {
                // A batch-wide failure (deadlock between batches, serialisation): isolate
                // each command in its own transaction so one cannot fail the others.
                tracing::warn!(%error, size = requests.len(), "batch append failed; retrying commands one by one");
                for (request, reply) in requests.into_iter().zip(replies) {
                    let outcome = write_batch(&pool, std::slice::from_ref(&request))
                        .await
                        .and_then(|mut o| o.pop().ok_or_else(|| StoreError::Protocol("empty result".into())));
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(error));
                }
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum RawOutcome {
    Ok {
        positions: Vec<u64>,
        reply: serde_json::Value,
    },
    Duplicate(StoredCommandRef),
    Conflict {},
    UniqueTaken {
        scope: String,
        key: String,
        owner: Option<Uuid>,
    },
    SlotFull {
        active: u64,
        max: u64,
    },
}

async fn write_batch(pool: &PgPool, requests: &[AppendRequest]) -> Result<Vec<AppendOutcome>, StoreError> {
    let Json(raw): Json<Vec<RawOutcome>> = sqlx::query_scalar("SELECT flexcore_append($1)")
        .bind(Json(requests))
        .fetch_one(pool)
        .await?;
    if raw.len() != requests.len() {
        return Err(StoreError::Protocol(format!(
            "{} results for {} commands",
            raw.len(),
            requests.len()
        )));
    }
    Ok(raw
        .into_iter()
        .map(|r| match r {
            RawOutcome::Ok { positions, reply } => AppendOutcome::Committed { positions, reply },
            RawOutcome::Duplicate(stored) => AppendOutcome::Duplicate(stored),
            RawOutcome::Conflict {} => AppendOutcome::VersionConflict,
            RawOutcome::UniqueTaken { scope, key, owner } => AppendOutcome::UniqueTaken { scope, key, owner },
            RawOutcome::SlotFull { active, max } => AppendOutcome::SlotsFull { active, max },
        })
        .collect())
}
