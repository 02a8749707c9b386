//! Data appended to and read from the store.

use chrono::{DateTime, Utc};
use flexcore_contracts::{EventEnvelope, EventMetadata, OpaqueJson};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An event to append. Its version is decided by the caller (loaded version + 1 + index).
#[derive(Debug, Clone, Serialize)]
pub struct NewEvent {
    /// Unique event id (also the JetStream `Nats-Msg-Id`).
    pub event_id: Uuid,
    /// `plugin`, `pipeline`, `run` or `schedule`.
    pub aggregate_type: String,
    /// The aggregate.
    pub aggregate_id: Uuid,
    /// Version of the aggregate after this event.
    pub version: u64,
    /// Qualified event type.
    pub event_type: String,
    /// Schema version of `data`.
    pub schema_version: u32,
    /// Payload, stored as this exact text (sent apart from the batch: see `append`).
    #[serde(skip)]
    pub data: OpaqueJson,
    /// Correlation, causation, actor, trace.
    pub metadata: EventMetadata,
}

/// A uniqueness claim kept with the events (e.g. a pipeline name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UniqueKey {
    /// Namespace of the key (`pipeline_name`).
    pub scope: String,
    /// The unique value.
    pub key: String,
    /// The aggregate holding it.
    pub owner: Uuid,
}

/// A slot in a bounded pool (e.g. a pipeline's active runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotClaim {
    /// The pool (pipeline id).
    pub pool: Uuid,
    /// The holder (run id).
    pub holder: Uuid,
    /// Pool size, checked on acquisition.
    pub max: u32,
}

/// A version an aggregate the decision read (without writing it) must still be at when
/// the command commits: the decision used a cached state of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VersionCheck {
    /// The aggregate.
    pub aggregate_id: Uuid,
    /// Its version as the decision saw it (0: it did not exist).
    pub version: u64,
}

/// Everything one command writes, atomically.
#[derive(Debug, Clone, Serialize)]
pub struct AppendRequest {
    /// Idempotency key; stored with the reply when given.
    pub command_id: Option<Uuid>,
    /// Qualified command name, stored in the command log.
    pub command_type: String,
    /// Hash of the command body, to tell a retried command from a reused id.
    pub payload_hash: String,
    /// The events, in order (may span aggregates).
    #[serde(skip)]
    pub events: Vec<NewEvent>,
    /// Unique keys to take.
    pub claims: Vec<UniqueKey>,
    /// Unique keys to give back.
    pub releases: Vec<UniqueKey>,
    /// Slot to take (refused when the pool is full).
    pub slot_acquire: Option<SlotClaim>,
    /// Slot to give back.
    pub slot_release: Option<SlotClaim>,
    /// The reply to store in the command log for a retry of `command_id` to be answered
    /// with (`None` without a command id: nothing would read it); the store fills in its
    /// `global_position`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<serde_json::Value>,
    /// Versions of aggregates read from a cache, checked before anything is written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<VersionCheck>,
}

/// What became of one append.
#[derive(Debug, Clone, PartialEq)]
pub enum AppendOutcome {
    /// Committed: the global position of each event (the caller builds its reply from
    /// them; the stored reply is read only for a retried command id).
    Committed {
        /// Positions, in event order.
        positions: Vec<u64>,
    },
    /// The command id was processed before: its stored reply.
    Duplicate(StoredCommand),
    /// Another writer appended to one of the aggregates first (optimistic concurrency).
    VersionConflict,
    /// A unique constraint other than an aggregate's version refused the command's rows:
    /// a defect (an event id or a slot holder used twice), never retried.
    ConstraintViolated {
        /// The constraint's name, as Postgres reported it.
        constraint: String,
    },
    /// An aggregate in [`AppendRequest::checks`] is no longer at the version checked:
    /// nothing was written; decide again on fresh state.
    StaleRead {
        /// The first aggregate that moved on.
        aggregate_id: Uuid,
    },
    /// A unique key is held by another aggregate.
    UniqueTaken {
        /// Scope of the key.
        scope: String,
        /// The key.
        key: String,
        /// Its holder.
        owner: Option<Uuid>,
    },
    /// The slot pool is full.
    SlotsFull {
        /// Slots in use.
        active: u64,
        /// Pool size.
        max: u64,
    },
}

/// A command-log entry: what a command id was first used for, and its reply (read for a
/// duplicate command id, by [`crate::EventStore::command`] or from `flexcore_append`).
#[derive(Debug, Clone, PartialEq, Deserialize, sqlx::FromRow)]
pub struct StoredCommand {
    /// The stored reply.
    #[sqlx(json)]
    pub reply: serde_json::Value,
    /// The command the id was first used for.
    pub command_type: String,
    /// Hash of that command's body.
    pub payload_hash: String,
}

/// A position in the global log, in reading order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Transaction id (xid8) of the last event read.
    pub transaction_id: u64,
    /// Global position of the last event read.
    pub global_position: u64,
}

/// A committed event.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Position in the global log.
    pub global_position: u64,
    /// Writing transaction (xid8).
    pub transaction_id: u64,
    /// Event id.
    pub event_id: Uuid,
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: Uuid,
    /// Version within the aggregate.
    pub version: u64,
    /// Qualified event type.
    pub event_type: String,
    /// Schema version of `data`.
    pub schema_version: u32,
    /// Payload, exactly as stored.
    pub data: OpaqueJson,
    /// Metadata.
    pub metadata: EventMetadata,
    /// Commit time.
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// The reading-order position of this event.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            transaction_id: self.transaction_id,
            global_position: self.global_position,
        }
    }

    /// The public envelope.
    pub fn to_envelope(&self) -> EventEnvelope {
        EventEnvelope {
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id,
            version: self.version,
            global_position: self.global_position,
            schema_version: self.schema_version,
            recorded_at: self.recorded_at,
            data: self.data.clone(),
            metadata: self.metadata.clone(),
        }
    }
}
