//! How each entity view folds its aggregate's events ([`crate::projection::Entity`]
//! impls for the read-model types of `flexcore_contracts::views`).

mod pipelines;
mod plugins;
mod runs;
mod schedules;

use flexcore_eventstore::RecordedEvent;

/// Decodes a stored event into its aggregate's typed enum.
fn typed<T>(
    event: &RecordedEvent,
    decode: fn(&str, u32, &flexcore_contracts::OpaqueJson) -> Result<T, flexcore_contracts::events::EventDecodeError>,
) -> Result<T, String> {
    decode(&event.event_type, event.schema_version, &event.data).map_err(|e| e.to_string())
}
