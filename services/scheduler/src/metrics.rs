//! The scheduler's readiness checks. Its one metric, `flexcore_schedule_fire_lag_seconds`
//! (how long after its slot time a slot was fired, by this replica's clock), is observed
//! where [`crate::service`] fires a slot.

use flexcore_contracts::subjects;
use flexcore_service::admin::Checks;

/// What a replica serves once it has replayed the event log and fires (the readiness
/// check `serving:schedules`).
pub const SERVING: &str = "schedules";

/// The readiness checks of a scheduler replica: NATS, the events stream it follows, and
/// that it has replayed the log up to where the stream stood at its start and fires
/// (`serving:schedules`): before that it knows neither its schedules nor its runs' leases.
pub fn checks(client: &async_nats::Client) -> Checks {
    Checks::new()
        .nats(client.clone())
        .stream(client.clone(), subjects::EVENTS_STREAM)
        .serving(SERVING)
}
