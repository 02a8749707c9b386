//! Event store integration tests against real Postgres and a private JetStream server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod append;
mod append_sql;
mod linger;
mod ordering;
mod relay;

use flexcore_contracts::EventMetadata;
use flexcore_eventstore::append::GroupCommitConfig;
use flexcore_eventstore::{AppendRequest, EventStore, NewEvent};
use uuid::Uuid;

pub fn store(db: &flexcore_testkit::TestDb) -> EventStore {
    EventStore::new(
        db.pool.clone(),
        GroupCommitConfig {
            writers: 4,
            batch_max: 32,
            linger: std::time::Duration::from_millis(1),
        },
    )
}

pub fn event(aggregate_id: Uuid, version: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        aggregate_type: "pipeline".into(),
        aggregate_id,
        version,
        event_type: "pipeline.paused".into(),
        schema_version: 1,
        data: serde_json::json!({"n": version}).into(),
        metadata: EventMetadata::default(),
    }
}

pub fn request(command_id: Option<Uuid>, events: Vec<NewEvent>) -> AppendRequest {
    let aggregate_id = events.first().map(|e| e.aggregate_id).unwrap_or_default();
    AppendRequest {
        command_id,
        command_type: "pipeline.pause".into(),
        payload_hash: "h".into(),
        events,
        claims: vec![],
        releases: vec![],
        slot_acquire: None,
        slot_release: None,
        reply: command_id.map(|_| serde_json::json!({"ok": true, "aggregate_id": aggregate_id})),
        checks: vec![],
    }
}
