//! Every event payload, one enum per aggregate. An event's `type` is qualified
//! (`pipeline.created`); its `data` is the variant's struct. Each enum can be split into
//! `(type, data)` for storage and rebuilt from them (upcasting older schema versions).

pub mod pipeline;
pub mod plugin;
pub mod run;
pub mod schedule;

pub use pipeline::*;
pub use plugin::*;
pub use run::*;
pub use schedule::*;

/// Current schema version of every event's `data`. Bump it together with an upcaster in
/// [`upcast`] when a payload changes incompatibly.
pub const SCHEMA_VERSION: u32 = 1;

use crate::opaque::OpaqueJson;

/// An event that could not be rebuilt from storage.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    /// The type is not one of the aggregate's events.
    #[error("unknown {aggregate} event type {event_type:?}")]
    UnknownType {
        /// Aggregate type.
        aggregate: &'static str,
        /// The stored type.
        event_type: String,
    },
    /// The data does not match the type's schema.
    #[error("event {event_type} has invalid data: {source}")]
    InvalidData {
        /// The stored type.
        event_type: String,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// The schema version is newer than this build understands.
    #[error("event {event_type} has schema version {version}, newer than {SCHEMA_VERSION}")]
    TooNew {
        /// The stored type.
        event_type: String,
        /// The stored schema version.
        version: u32,
    },
}

/// Brings stored `data` of an older schema version up to [`SCHEMA_VERSION`].
pub fn upcast<'a>(
    event_type: &str,
    schema_version: u32,
    data: &'a OpaqueJson,
) -> Result<std::borrow::Cow<'a, OpaqueJson>, EventDecodeError> {
    if schema_version > SCHEMA_VERSION {
        return Err(EventDecodeError::TooNew {
            event_type: event_type.to_owned(),
            version: schema_version,
        });
    }
    // Version 1 is the first published schema; no upcasters exist yet.
    Ok(std::borrow::Cow::Borrowed(data))
}

macro_rules! aggregate_events {
    ($(#[$doc:meta])* $enum:ident, $aggregate:literal { $( $variant:ident($ty:ty) = $type:literal ),* $(,)? }) => {
        $(#[$doc])*
        // Events are built once and moved, not copied around in bulk: boxing the large
        // variants would only add allocations.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone, PartialEq)]
        pub enum $enum {
            $(
                #[doc = concat!("`", $type, "`")]
                $variant($ty),
            )*
        }

        impl $enum {
            /// Aggregate type of these events.
            pub const AGGREGATE_TYPE: &'static str = $aggregate;
            /// Every event type of the aggregate.
            pub const TYPES: &'static [&'static str] = &[$($type),*];

            /// The qualified event type.
            pub fn event_type(&self) -> &'static str {
                match self { $(Self::$variant(_) => $type,)* }
            }

            /// The event's `data` (client data inside it exactly as it was sent).
            pub fn data(&self) -> OpaqueJson {
                let text = match self { $(Self::$variant(e) => serde_json::to_string(e),)* };
                text.ok().and_then(|t| OpaqueJson::parse(&t).ok()).unwrap_or_default()
            }

            /// Rebuilds the event from its stored type, schema version and data.
            pub fn from_stored(event_type: &str, schema_version: u32, data: &OpaqueJson) -> Result<Self, EventDecodeError> {
                let data = upcast(event_type, schema_version, data)?;
                let invalid = |source| EventDecodeError::InvalidData { event_type: event_type.to_owned(), source };
                match event_type {
                    $($type => data.decode().map(Self::$variant).map_err(invalid),)*
                    other => Err(EventDecodeError::UnknownType { aggregate: $aggregate, event_type: other.to_owned() }),
                }
            }

            /// JSON Schema of every event's `data`, by type.
            pub fn schemas() -> Vec<(String, schemars::Schema)> {
                vec![$(($type.to_owned(), crate::schema::schema_for::<$ty>()),)*]
            }
        }

        $(
            impl From<$ty> for $enum {
                fn from(e: $ty) -> Self {
                    Self::$variant(e)
                }
            }
        )*
    };
}

aggregate_events! {
    /// Events of the Plugin aggregate.
    PluginEvent, "plugin" {
        Registered(PluginRegistered) = "plugin.registered",
        Deprecated(PluginDeprecated) = "plugin.deprecated",
        Disabled(PluginDisabled) = "plugin.disabled",
        Enabled(PluginEnabled) = "plugin.enabled",
    }
}

aggregate_events! {
    /// Events of the Pipeline aggregate.
    PipelineEvent, "pipeline" {
        Created(PipelineCreated) = "pipeline.created",
        Updated(PipelineUpdated) = "pipeline.updated",
        Paused(PipelinePaused) = "pipeline.paused",
        Resumed(PipelineResumed) = "pipeline.resumed",
        Archived(PipelineArchived) = "pipeline.archived",
        StateCommitted(PipelineStateCommitted) = "pipeline.state_committed",
    }
}

aggregate_events! {
    /// Events of the Run aggregate.
    RunEvent, "run" {
        Requested(RunRequested) = "run.requested",
        Claimed(RunClaimed) = "run.claimed",
        Checkpointed(RunCheckpointed) = "run.checkpointed",
        Succeeded(RunSucceeded) = "run.succeeded",
        Failed(RunFailed) = "run.failed",
        Retried(RunRetried) = "run.retried",
        Cancelled(RunCancelled) = "run.cancelled",
        TimedOut(RunTimedOut) = "run.timed_out",
    }
}

aggregate_events! {
    /// Events of the Schedule aggregate.
    ScheduleEvent, "schedule" {
        Created(ScheduleCreated) = "schedule.created",
        Updated(ScheduleUpdated) = "schedule.updated",
        Paused(SchedulePaused) = "schedule.paused",
        Resumed(ScheduleResumed) = "schedule.resumed",
        Deleted(ScheduleDeleted) = "schedule.deleted",
        SlotSkipped(ScheduleSlotSkipped) = "schedule.slot_skipped",
        SlotsMissed(ScheduleSlotsMissed) = "schedule.slots_missed",
    }
}

/// JSON Schemas of every event's `data`, by type.
pub fn all_schemas() -> Vec<(String, schemars::Schema)> {
    let mut all = PluginEvent::schemas();
    all.extend(PipelineEvent::schemas());
    all.extend(RunEvent::schemas());
    all.extend(ScheduleEvent::schemas());
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_storage_form() {
        let e = PipelineEvent::from(PipelineResumed {});
        let back = PipelineEvent::from_stored(e.event_type(), SCHEMA_VERSION, &e.data());
        assert_eq!(back.ok(), Some(e));
    }

    #[test]
    fn unknown_and_too_new_events_are_errors() {
        assert!(matches!(
            PipelineEvent::from_stored("pipeline.exploded", 1, &OpaqueJson::from_value(&serde_json::json!({}))),
            Err(EventDecodeError::UnknownType { .. })
        ));
        assert!(matches!(
            PipelineEvent::from_stored("pipeline.resumed", SCHEMA_VERSION + 1, &OpaqueJson::null()),
            Err(EventDecodeError::TooNew { .. })
        ));
    }
}
