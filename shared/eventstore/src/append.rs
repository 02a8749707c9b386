//! Group commit: appends from many concurrent commands are collected by a few writer
//! tasks and written by one `flexcore_append` call per batch — one round trip and one
//! commit for up to `batch_max` commands — so throughput grows with concurrency instead
//! of being bound by one fsync per command.

use flexcore_telemetry::propagation;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::batch::{self, SharedQueue};
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
/// A queued append: what to write, where its outcome goes, and its span (`Span::none()`
/// unless spans are exported).
type Queued = (AppendRequest, Reply, tracing::Span);

/// Handle to the writer tasks; cheap to clone.
#[derive(Clone)]
pub struct GroupCommitter {
    tx: mpsc::Sender<Queued>,
}

impl GroupCommitter {
    /// Starts `config.writers` writer tasks on `pool`. They stop when every handle is dropped.
    pub fn start(pool: PgPool, config: GroupCommitConfig) -> Self {
        let (tx, rx) = batch::queue(config.batch_max.max(1) * config.writers.max(1) * 4);
        for _ in 0..config.writers.max(1) {
            tokio::spawn(writer(pool.clone(), rx.clone(), config.batch_max.max(1)));
        }
        Self { tx }
    }

    /// Appends one command's writes; resolves when its batch has committed. While spans
    /// are exported and the events carry the `traceparent` of a sampled trace, this is an
    /// `eventstore.append` span (a child of the caller's), and the batch's
    /// `eventstore.commit` span is a child of the first append in it and linked to the
    /// others.
    pub async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let sampled = || {
            request
                .events
                .first()
                .and_then(|event| event.metadata.traceparent.as_deref())
                .is_some_and(propagation::sampled)
        };
        let span = if propagation::enabled() && sampled() {
            tracing::info_span!(
                target: flexcore_telemetry::TRACE_ONLY,
                "eventstore.append",
                command_type = %request.command_type,
                events = request.events.len()
            )
        } else {
            tracing::Span::none()
        };
        let (reply, rx) = oneshot::channel();
        let queued = (request, reply, span.clone());
        async move {
            self.tx.send(queued).await.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        }
        .instrument(span)
        .await
    }
}

async fn writer(pool: PgPool, rx: SharedQueue<Queued>, batch_max: usize) {
    while let Some(batch) = batch::next_batch(&rx, batch_max).await {
        let mut requests = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut spans = Vec::with_capacity(batch.len());
        for (request, reply, span) in batch {
            requests.push(request);
            replies.push(reply);
            spans.push(span);
        }
        match write_batch(&pool, &requests).instrument(commit_span(&spans)).await {
            Ok(outcomes) => {
                crate::metrics::committed(&requests, &outcomes);
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
                    if let Ok(outcome) = &outcome {
                        crate::metrics::committed(std::slice::from_ref(&request), std::slice::from_ref(outcome));
                    }
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

/// The span of one batch's transaction: a child of its first traced append, linked to
/// the other appends (`Span::none()` when none is traced).
fn commit_span(appends: &[tracing::Span]) -> tracing::Span {
    let mut traced = appends.iter().filter(|span| !span.is_none());
    let Some(first) = traced.next() else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        target: flexcore_telemetry::TRACE_ONLY,
        parent: first,
        "eventstore.commit",
        commands = appends.len()
    );
    for other in traced {
        span.follows_from(other);
    }
    span
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
    Stale {
        aggregate_id: Uuid,
    },
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

/// A request as `flexcore_append` reads it: the events without their data, each naming
/// its data's index (1-based) in the separate `bodies` array, so the data never passes
/// through jsonb (which would re-order keys and normalise numbers).
#[derive(Serialize)]
struct WireRequest<'a> {
    #[serde(flatten)]
    request: &'a AppendRequest,
    events: Vec<WireEvent<'a>>,
}

#[derive(Serialize)]
struct WireEvent<'a> {
    #[serde(flatten)]
    event: &'a crate::model::NewEvent,
    body: usize,
}

async fn write_batch(pool: &PgPool, requests: &[AppendRequest]) -> Result<Vec<AppendOutcome>, StoreError> {
    let mut bodies: Vec<&str> = Vec::new();
    let wire: Vec<WireRequest<'_>> = requests
        .iter()
        .map(|request| WireRequest {
            request,
            events: request
                .events
                .iter()
                .map(|event| {
                    bodies.push(event.data.as_str());
                    WireEvent {
                        event,
                        body: bodies.len(),
                    }
                })
                .collect(),
        })
        .collect();
    let Json(raw): Json<Vec<RawOutcome>> = sqlx::query_scalar("SELECT flexcore_append($1, $2)")
        .bind(Json(wire))
        .bind(&bodies)
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
            RawOutcome::Stale { aggregate_id } => AppendOutcome::StaleRead { aggregate_id },
            RawOutcome::UniqueTaken { scope, key, owner } => AppendOutcome::UniqueTaken { scope, key, owner },
            RawOutcome::SlotFull { active, max } => AppendOutcome::SlotsFull { active, max },
        })
        .collect())
}
