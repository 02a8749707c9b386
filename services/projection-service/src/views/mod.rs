//! How each entity view folds its aggregate's events ([`crate::projection::Entity`]
//! impls for the read-model types of `flexcore_contracts::views`).

mod pipelines;
mod plugins;
mod runs;
mod schedules;

use std::str::FromStr;

use flexcore_contracts::lifecycle::UnknownState;
use flexcore_eventstore::RecordedEvent;

/// Decodes a stored event into its aggregate's typed enum.
fn typed<T>(
    event: &RecordedEvent,
    decode: fn(&str, u32, &flexcore_contracts::OpaqueJson) -> Result<T, flexcore_contracts::events::EventDecodeError>,
) -> Result<T, String> {
    decode(&event.event_type, event.schema_version, &event.data).map_err(|e| e.to_string())
}

/// A row's stored `state` as its lifecycle status, so an event moves it by the contracts'
/// rule ([`flexcore_contracts::lifecycle`]) rather than by a copy of it here.
fn status<S: FromStr<Err = UnknownState>>(state: &str) -> Result<S, String> {
    state.parse().map_err(|e: UnknownState| format!("read model row: {e}"))
}
