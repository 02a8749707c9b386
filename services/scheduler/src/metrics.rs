//! The scheduler's readiness checks. Its one metric, `flexcore_schedule_fire_lag_seconds`
//! (how long after its slot time a slot was fired, by this replica's clock), is observed
//! where [`crate::service`] fires a slot.

use flexcore_contracts::subjects;
use flexcore_service::admin::Checks;

/// The readiness checks of a scheduler replica: NATS and the events stream it follows.
pub fn checks(client: &async_nats::Client) -> Checks {
    Checks::new()
        .nats(client.clone())
        .stream(client.clone(), subjects::EVENTS_STREAM)
}
