//! Group commit: appends from many concurrent commands are collected by a few writer
//! tasks and written by one `flexcore_append` call per batch — one round trip and one
//! commit for up to `batch_max` commands — so throughput grows with concurrency instead
//! of being bound by one fsync per command.

use std::sync::Arc;

use flexcore_telemetry::propagation;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::batch::{self, Announced, Awaiting, Expected, SharedQueue};
use crate::error::StoreError;
use crate::model::{AppendOutcome, AppendRequest, StoredCommand};

/// The canonical source of `flexcore_append`, the function every batch calls
/// (`shared/eventstore/sql/flexcore_append.sql`; migrations deploy it, and tests check
/// that the newest one and a migrated database hold exactly this).
pub const APPEND_FUNCTION_SQL: &str = include_str!("../sql/flexcore_append.sql");

/// The unique constraint whose violation means another writer took the version first.
const VERSION_CONSTRAINT: &str = "events_aggregate_version";

/// Group-commit tuning.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommitConfig {
    /// Writer tasks (each holds at most one connection while writing).
    pub writers: usize,
    /// Most commands per transaction.
    pub batch_max: usize,
    /// Longest a writer holds a batch open for commands announced with
    /// [`GroupCommitter::announce`], and a group reader its batch for the reads such
    /// commands may still make (zero: never; nothing announced: no wait).
    pub linger: std::time::Duration,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self {
            writers: 4,
            batch_max: 64,
            linger: std::time::Duration::from_millis(1),
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
    expected: Arc<Expected>,
}

impl GroupCommitter {
    /// Starts `config.writers` writer tasks on `pool`. They stop when every handle is dropped.
    pub fn start(pool: PgPool, config: GroupCommitConfig) -> Self {
        let (tx, rx) = batch::queue(config.batch_max.max(1) * config.writers.max(1) * 4);
        let expected = Arc::new(Expected::default());
        for _ in 0..config.writers.max(1) {
            tokio::spawn(writer(
                pool.clone(),
                rx.clone(),
                Arc::clone(&expected),
                config.batch_max.max(1),
                config.linger,
            ));
        }
        Self { tx, expected }
    }

    /// The announcements, for a group reader that waits for them as well.
    pub(crate) fn expected(&self) -> Arc<Expected> {
        Arc::clone(&self.expected)
    }

    /// Announces an append that will probably follow soon (a command that is deciding):
    /// until the returned guard is dropped, a writer whose batch has room waits up to
    /// the configured linger for it, so that concurrent commands share a commit even
    /// when they reach the committer a little apart. Hand the guard to
    /// [`GroupCommitter::append_announced`], or drop it when nothing will be appended.
    pub fn announce(&self) -> Announced {
        self.expected.announce()
    }

    /// Appends one command's writes; resolves when its batch has committed. While spans
    /// are exported and the events carry the `traceparent` of a sampled trace, this is an
    /// `eventstore.append` span (a child of the caller's), and the batch's
    /// `eventstore.commit` span is a child of the first append in it and linked to the
    /// others.
    pub async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.append_announced(request, None).await
    }

    /// [`GroupCommitter::append`] of the append `announced` announced: the announcement
    /// ends once the request is queued (so a writer never closes a batch it was about to
    /// join), or when this fails.
    pub async fn append_announced(
        &self,
        request: AppendRequest,
        announced: Option<Announced>,
    ) -> Result<AppendOutcome, StoreError> {
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
            drop(announced);
            rx.await.map_err(|_| StoreError::Closed)?
        }
        .instrument(span)
        .await
    }
}

async fn writer(
    pool: PgPool,
    rx: SharedQueue<Queued>,
    expected: Arc<Expected>,
    batch_max: usize,
    linger: std::time::Duration,
) {
    while let Some(batch) = batch::next_batch_expecting(&rx, batch_max, &expected, Awaiting::All, linger).await {
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
    },
    Duplicate(StoredCommand),
    Conflict {
        constraint: String,
    },
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

/// The batch as `flexcore_append` takes it: the requests, and the events' data apart.
fn wire(requests: &[AppendRequest]) -> (Vec<WireRequest<'_>>, Vec<&str>) {
    let mut bodies: Vec<&str> = Vec::new();
    let wire = requests
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
    (wire, bodies)
}

impl RawOutcome {
    fn into_outcome(self) -> AppendOutcome {
        match self {
            Self::Ok { positions } => AppendOutcome::Committed { positions },
            Self::Duplicate(stored) => AppendOutcome::Duplicate(stored),
            Self::Conflict { constraint } if constraint == VERSION_CONSTRAINT => AppendOutcome::VersionConflict,
            Self::Conflict { constraint } => AppendOutcome::ConstraintViolated { constraint },
            Self::Stale { aggregate_id } => AppendOutcome::StaleRead { aggregate_id },
            Self::UniqueTaken { scope, key, owner } => AppendOutcome::UniqueTaken { scope, key, owner },
            Self::SlotFull { active, max } => AppendOutcome::SlotsFull { active, max },
        }
    }
}

async fn write_batch(pool: &PgPool, requests: &[AppendRequest]) -> Result<Vec<AppendOutcome>, StoreError> {
    let (wire, bodies) = wire(requests);
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
    Ok(raw.into_iter().map(RawOutcome::into_outcome).collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::model::{NewEvent, SlotClaim, UniqueKey, VersionCheck};

    /// The function's text without its comments.
    fn function_code() -> String {
        APPEND_FUNCTION_SQL
            .lines()
            .map(|line| line.split("--").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The JSON keys the function reads: `x->'key'`, `x->>'key'`, `x ? 'key'`, and the
    /// columns of `jsonb_to_recordset(…) AS r(key type, …)`.
    fn keys_read(code: &str) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        for marker in ["->>'", "->'", "? '"] {
            for (at, _) in code.match_indices(marker) {
                let rest = &code[at + marker.len()..];
                keys.insert(rest[..rest.find('\'').unwrap()].to_owned());
            }
        }
        for (at, _) in code.match_indices("jsonb_to_recordset(") {
            let rest = &code[at..];
            let columns = &rest[rest.find("AS r(").unwrap() + 5..];
            for column in columns[..columns.find(')').unwrap()].split(',') {
                keys.insert(column.split_whitespace().next().unwrap().to_owned());
            }
        }
        keys
    }

    /// Every object key in `value`, except inside the opaque `reply` and `metadata`.
    fn keys_sent(value: &serde_json::Value, keys: &mut BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, inner) in map {
                    keys.insert(key.clone());
                    if key != "reply" && key != "metadata" {
                        keys_sent(inner, keys);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| keys_sent(item, keys)),
            _ => {}
        }
    }

    fn full_request() -> AppendRequest {
        let id = Uuid::now_v7();
        let key = UniqueKey {
            scope: "pipeline_name".into(),
            key: "orders".into(),
            owner: id,
        };
        let slot = SlotClaim {
            pool: id,
            holder: Uuid::now_v7(),
            max: 1,
        };
        AppendRequest {
            command_id: Some(Uuid::now_v7()),
            command_type: "pipeline.create".into(),
            payload_hash: "h".into(),
            events: vec![NewEvent {
                event_id: Uuid::now_v7(),
                aggregate_type: "pipeline".into(),
                aggregate_id: id,
                version: 1,
                event_type: "pipeline.created".into(),
                schema_version: 1,
                data: serde_json::json!({"name": "orders"}).into(),
                metadata: Default::default(),
            }],
            claims: vec![key.clone()],
            releases: vec![key],
            slot_acquire: Some(slot.clone()),
            slot_release: Some(slot),
            reply: Some(serde_json::json!({"ok": true})),
            checks: vec![VersionCheck {
                aggregate_id: id,
                version: 3,
            }],
        }
    }

    #[test]
    fn the_function_reads_exactly_the_fields_the_rust_side_sends() {
        let requests = [full_request()];
        let (wire, bodies) = wire(&requests);
        assert_eq!(bodies, vec![r#"{"name":"orders"}"#]);
        let mut sent = BTreeSet::new();
        keys_sent(&serde_json::to_value(&wire).unwrap(), &mut sent);
        assert_eq!(
            keys_read(&function_code()),
            sent,
            "read by flexcore_append (left) vs sent by AppendRequest (right)"
        );
    }

    /// The arguments of `call(` … `)` starting at `from`, split at top-level commas.
    fn arguments(code: &str, from: usize) -> Vec<String> {
        let (mut depth, mut quoted, mut current, mut args) = (0, false, String::new(), Vec::new());
        for ch in code[from..].chars() {
            match ch {
                '\'' => quoted = !quoted,
                '(' if !quoted => depth += 1,
                ')' if !quoted && depth == 0 => break,
                ')' if !quoted => depth -= 1,
                ',' if !quoted && depth == 0 => {
                    args.push(current.trim().to_owned());
                    current.clear();
                    continue;
                }
                _ => {}
            }
            current.push(ch);
        }
        args.push(current.trim().to_owned());
        args
    }

    #[test]
    fn every_outcome_the_function_builds_is_understood_with_all_its_fields() {
        let code = function_code();
        let mut statuses = BTreeSet::new();
        for (at, marker) in code.match_indices("jsonb_build_object(") {
            let args = arguments(&code, at + marker.len());
            let pairs: Vec<(String, &String)> = args
                .chunks(2)
                .map(|pair| (pair[0].trim_matches('\'').to_owned(), &pair[1]))
                .collect();
            let Some((_, status)) = pairs.iter().find(|(key, _)| key == "status") else {
                continue; // the stored reply's global_position
            };
            let status = status.trim_matches('\'').to_owned();
            let mut object = serde_json::Map::new();
            for (key, _) in &pairs {
                let value = match key.as_str() {
                    "status" => serde_json::json!(status),
                    "positions" => serde_json::json!([1, 2]),
                    "reply" => serde_json::json!({"ok": true}),
                    "aggregate_id" | "owner" => serde_json::json!(Uuid::now_v7()),
                    "active" | "max" => serde_json::json!(1),
                    _ => serde_json::json!("x"),
                };
                object.insert(key.clone(), value);
            }
            let outcome: RawOutcome = serde_json::from_value(serde_json::Value::Object(object.clone()))
                .unwrap_or_else(|e| panic!("{status}: {object:?} is not understood: {e}"));
            if let RawOutcome::Conflict { constraint } = outcome {
                assert_eq!(constraint, "x", "the conflict's constraint name is kept");
            }
            statuses.insert(status);
        }
        let expected: BTreeSet<String> = ["ok", "duplicate", "conflict", "stale", "unique_taken", "slot_full"]
            .map(String::from)
            .into();
        assert_eq!(statuses, expected);
    }

    #[test]
    fn only_the_version_constraint_is_a_version_conflict() {
        let conflict = |constraint: &str| {
            RawOutcome::Conflict {
                constraint: constraint.into(),
            }
            .into_outcome()
        };
        assert_eq!(conflict("events_aggregate_version"), AppendOutcome::VersionConflict);
        assert_eq!(
            conflict("run_slots_pkey"),
            AppendOutcome::ConstraintViolated {
                constraint: "run_slots_pkey".into()
            }
        );
    }
}
