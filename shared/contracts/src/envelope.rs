//! The event envelope: the body of every message on `FLEXCORE_EVENTS`, and its headers.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::opaque::OpaqueJson;
use uuid::Uuid;

/// Header carrying the event id; JetStream de-duplicates on it.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// Header carrying the event's position in the global log.
pub const HEADER_GLOBAL_POSITION: &str = "Flexcore-Global-Position";
/// Header carrying the event's version within its aggregate.
pub const HEADER_VERSION: &str = "Flexcore-Version";
/// Header carrying the schema version of the event's `data`.
pub const HEADER_SCHEMA_VERSION: &str = "Flexcore-Schema-Version";
/// Header carrying the qualified event type (`pipeline.created`).
pub const HEADER_EVENT_TYPE: &str = "Flexcore-Event-Type";
/// Header carrying the writing transaction's id (xid8): with the global position it gives
/// the log's reading order, `(transaction_id, global_position)`.
pub const HEADER_TRANSACTION_ID: &str = "Flexcore-Transaction-Id";
/// W3C trace context header.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// Optional command header: correlation id to stamp on the resulting events.
pub const HEADER_CORRELATION_ID: &str = "Flexcore-Correlation-Id";
/// Header carrying the NKey public key of a message's signer (docs/security.md).
pub const HEADER_SIGNER: &str = "Flexcore-Signer";
/// Header carrying when the signer signed, in milliseconds since the Unix epoch.
pub const HEADER_SIGNED_AT: &str = "Flexcore-Signed-At";
/// Header carrying the Ed25519 signature of a message (unpadded base64url).
pub const HEADER_SIGNATURE: &str = "Flexcore-Signature";
/// Header of a command the gateway sends for a caller of the HTTP API:
/// `<api role>:<caller>` (e.g. `operator:key:ci`), covered by the signature.
pub const HEADER_ON_BEHALF_OF: &str = "Flexcore-On-Behalf-Of";
/// Optional command header: who says they asked for the command (`user@host`, or a
/// configured principal; flexctl sends it). A claim, never verified: it is recorded apart
/// from the actor (`metadata.requested_by`) and never replaces or changes it.
pub const HEADER_REQUESTED_BY: &str = "Flexcore-Requested-By";
/// Header of every reply and presence announcement naming the service and its version that
/// sent it (`flexcore-command/0.1.0`); not signed, for display only.
pub const HEADER_SERVICE: &str = "Flexcore-Service";

/// An event as published on JetStream and returned by event queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventEnvelope {
    /// Unique id of the event (also its `Nats-Msg-Id`).
    pub event_id: Uuid,
    /// Qualified event type, e.g. `pipeline.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Aggregate type: `plugin`, `pipeline`, `run` or `schedule`.
    pub aggregate_type: String,
    /// Id of the aggregate the event belongs to.
    pub aggregate_id: Uuid,
    /// Version of the aggregate after this event (1 for the first event).
    pub version: u64,
    /// Position in the global log (gap-free order is by transaction, then position).
    pub global_position: u64,
    /// Schema version of `data`; older versions are upcast on read.
    pub schema_version: u32,
    /// When the event was committed.
    pub recorded_at: DateTime<Utc>,
    /// Event payload; its shape is given by `type` (see `schemas/events/`).
    pub data: OpaqueJson,
    /// Correlation, causation and actor.
    pub metadata: EventMetadata,
}

/// Who and what caused an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventMetadata {
    /// Correlation id shared by everything one request caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The command id that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Who caused it: the name of the identity that signed the command (docs/security.md),
    /// `unsigned` for an unsigned command accepted as role `client`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Who the sender says asked for it (`Flexcore-Requested-By`, e.g. `alice@laptop`
    /// from flexctl): a claim the command service does not verify, kept apart from
    /// `actor`, which alone says who is accountable (it is the verified identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// W3C `traceparent` of the command handling span, to continue the trace downstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}
