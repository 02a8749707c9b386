//! Deterministic identifiers, so that retries and replicas agree without coordination.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Namespace of plugin ids (UUID v5 of `name@version`).
pub const PLUGIN_NAMESPACE: Uuid = Uuid::from_u128(0x6f1e_2a5c_0b7d_4c1e_9a43_5d2f_8e61_c001);
/// Namespace of scheduled run ids (UUID v5 of `<schedule_id>@<slot RFC 3339>`).
pub const SLOT_NAMESPACE: Uuid = Uuid::from_u128(0x6f1e_2a5c_0b7d_4c1e_9a43_5d2f_8e61_c002);

/// The id of plugin `name@version`: registering the same pair twice addresses one aggregate.
pub fn plugin_id(name: &str, version: &str) -> Uuid {
    Uuid::new_v5(&PLUGIN_NAMESPACE, format!("{name}@{version}").as_bytes())
}

/// The id of the run a schedule requests for slot `slot`: every replica derives the same one.
pub fn scheduled_run_id(schedule_id: Uuid, slot: DateTime<Utc>) -> Uuid {
    let key = format!(
        "{schedule_id}@{}",
        slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    Uuid::new_v5(&SLOT_NAMESPACE, key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_id_is_stable_and_distinct() {
        assert_eq!(plugin_id("csv", "1.0.0"), plugin_id("csv", "1.0.0"));
        assert_ne!(plugin_id("csv", "1.0.0"), plugin_id("csv", "1.0.1"));
    }
}
