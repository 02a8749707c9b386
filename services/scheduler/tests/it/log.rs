//! The log as the scheduler's truth: an event it cannot decode stops the replica instead of
//! being skipped (docs/architecture.md, "An event that cannot be decoded").

use chrono::Utc;
use flexcore_contracts::envelope::{EventEnvelope, EventMetadata};
use flexcore_contracts::subjects;
use serde_json::json;
use uuid::Uuid;

use super::stack;

#[tokio::test]
async fn a_replica_stops_at_an_event_it_cannot_decode() {
    let s = stack().await;
    let pipeline = s.pipeline("undecodable", json!({})).await;
    let schedule = s.schedule(pipeline, json!({"cron": "0 * * * *"})).await;
    // A schedule event this build does not know, on the stream as the relay publishes it
    // (signed by the command service, so it is history, not a forgery to ignore).
    let envelope = EventEnvelope {
        event_id: Uuid::now_v7(),
        event_type: "schedule.exploded".into(),
        aggregate_type: "schedule".into(),
        aggregate_id: schedule,
        version: 2,
        global_position: 1_000_000,
        schema_version: 1,
        recorded_at: Utc::now(),
        data: json!({}).into(),
        metadata: EventMetadata::default(),
    };
    let subject = subjects::event("schedule", schedule, "schedule.exploded");
    let body = serde_json::to_vec(&envelope).unwrap();
    let headers = s.nats.identity("command").unwrap().signed_headers(&subject, &body);
    let js = async_nats::jetstream::new(s.client.clone());
    js.publish_with_headers(subject, headers, body.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let error = s.replica("a").ended().await.unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains("schedule.exploded") && message.contains("global position 1000000"),
        "{message}"
    );
    assert!(message.contains("the scheduler stops"), "{message}");
    s.stop();
}
