//! The reply to every command request.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ErrorBody;

/// `{"ok":true,…}` when the command was accepted, `{"ok":false,"error":…}` when refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CommandReply {
    /// The command was accepted and its events committed.
    Accepted(Accepted),
    /// The command was refused; nothing was written.
    Rejected(Rejected),
}

/// An accepted command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    /// Always `true`.
    pub ok: bool,
    /// The aggregate the command addressed.
    pub aggregate_id: Uuid,
    /// Its version after the command.
    pub version: u64,
    /// Global position of the last event written; pass it as `min_position` to queries
    /// to read your own write.
    pub global_position: u64,
    /// The events written, in order.
    pub events: Vec<EventRef>,
    /// `true` when the command was a dry run: the events listed (with ids never used)
    /// would have been written, nothing was, and `global_position` is 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// A refused command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rejected {
    /// Always `false`.
    pub ok: bool,
    /// Why it was refused.
    pub error: ErrorBody,
}

/// One event written by a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventRef {
    /// The event's id.
    pub event_id: Uuid,
    /// Qualified event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event's aggregate, when it is not the addressed one (multi-aggregate commands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate_id: Option<Uuid>,
    /// Version of its aggregate after the event.
    pub version: u64,
}

impl CommandReply {
    /// A refusal.
    pub fn rejected(error: ErrorBody) -> Self {
        Self::Rejected(Rejected { ok: false, error })
    }

    /// True for an accepted command.
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Accepted(_))
    }

    /// The error of a refusal.
    pub fn error(&self) -> Option<&ErrorBody> {
        match self {
            Self::Rejected(r) => Some(&r.error),
            Self::Accepted(_) => None,
        }
    }
}
