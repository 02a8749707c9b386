//! Snapshots: a replica starts from the latest one and folds only the events after it; one
//! it cannot verify is not used.

use async_nats::jetstream;
use chrono::Duration;
use flexcore_contracts::subjects;
use serde_json::json;

use super::*;

/// A replica writing a snapshot after every event.
fn snapshotting() -> SchedulerSettings {
    SchedulerSettings {
        snapshot_every_events: 1,
        snapshot_min_interval: std::time::Duration::ZERO,
        ..SchedulerSettings::default()
    }
}

/// The stream sequence the latest snapshot was taken at, once it is at least `after`
/// (within 20 s).
async fn snapshot_at_least(s: &Stack, after: u64) -> u64 {
    let js = jetstream::new(s.client.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut taken = 0;
        if let Ok(stream) = js.get_stream(subjects::SCHEDULER_STATE_STREAM).await {
            if let Ok(manifest) = stream
                .get_last_raw_message_by_subject(&subjects::scheduler_state(0))
                .await
            {
                let manifest: Value = serde_json::from_slice(&manifest.payload).unwrap();
                taken = manifest["sequence"].as_u64().unwrap();
            }
        }
        if taken >= after {
            return taken;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot at sequence {after} or later within 20 s (the latest: {taken})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn events_stream(s: &Stack) -> jetstream::stream::Stream {
    jetstream::new(s.client.clone())
        .get_stream(subjects::EVENTS_STREAM)
        .await
        .unwrap()
}

/// Per-second slots 1–5 fire under a replica that writes snapshots; it stops, and the
/// events before its last snapshot are deleted from the stream, the schedule's creation
/// among them. A replica started then knows the schedule only from the snapshot, and
/// fires slots 6–10: every slot once.
#[tokio::test]
async fn a_replica_starts_from_the_snapshot_and_folds_only_the_events_after_it() {
    let s = stack().await;
    let pipeline = s.pipeline("snapshotted", json!({"max_active_runs": 1000})).await;
    let schedule = s
        .schedule(
            pipeline,
            json!({"cron": "* * * * * *", "overlap": "allow", "catchup_cap": 10}),
        )
        .await;
    let start = whole_second(chrono::Utc::now()) + Duration::seconds(1);
    s.clock.set(start);
    let first = s.replica_with("a", snapshotting());
    s.settle().await;
    for i in 1..=5 {
        let slot = start + Duration::seconds(i);
        s.clock.set(slot);
        s.wait_fired(schedule, slot).await;
    }
    s.relayed().await;
    let mut events = events_stream(&s).await;
    let last = events.info().await.unwrap().state.last_sequence;
    let taken = snapshot_at_least(&s, last).await;
    first.stop().await;
    for sequence in 1..taken {
        events.delete_message(sequence).await.unwrap();
    }
    let second = s.replica("a");
    s.settle().await;
    for i in 6..=10 {
        let slot = start + Duration::seconds(i);
        s.clock.set(slot);
        s.wait_fired(schedule, slot).await;
    }
    s.settle().await;
    let fired: Vec<_> = s.fired(schedule).await.into_iter().filter(|t| *t > start).collect();
    let expected: Vec<_> = (1..=10).map(|i| start + Duration::seconds(i)).collect();
    assert_eq!(fired, expected, "every slot once, none twice, none missing");
    second.stop().await;
    s.stop();
}

/// A snapshot signed by an identity that is not a scheduler's (here one claiming that
/// nothing is scheduled, as of the last event) is not used: the replica replays the whole
/// log and fires the schedule.
#[tokio::test]
async fn a_snapshot_not_signed_by_a_scheduler_is_not_used() {
    let s = stack().await;
    let pipeline = s.pipeline("forged", json!({"max_active_runs": 1000})).await;
    let schedule = s
        .schedule(
            pipeline,
            json!({"cron": "* * * * * *", "overlap": "allow", "catchup_cap": 10}),
        )
        .await;
    s.relayed().await;
    let mut events = events_stream(&s).await;
    let last = events.info().await.unwrap().state.last_sequence;
    let at = events.get_raw_message(last).await.unwrap();
    let event_id = at.headers.get("Nats-Msg-Id").unwrap().as_str().to_owned();
    let js = jetstream::new(s.client.clone());
    let forger = s.nats.identity("runner").unwrap();
    let snapshot_id = Uuid::new_v4();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gzip, br#"{"schedules":[],"pipelines":[],"runs":[]}"#).unwrap();
    let data = gzip.finish().unwrap();
    let manifest = json!({"format": flexcore_scheduler::snapshot::FORMAT, "snapshot_id": snapshot_id, "chunks": 1,
        "bytes": data.len(), "sequence": last, "event_id": event_id, "taken_at": chrono::Utc::now()});
    for (index, body) in [(1, data), (0, serde_json::to_vec(&manifest).unwrap())] {
        let subject = subjects::scheduler_state(index);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{snapshot_id}.{index}").as_str());
        forger.sign(&subject, &mut headers, &body);
        js.publish_with_headers(subject, headers, body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let start = whole_second(chrono::Utc::now()) + Duration::seconds(1);
    s.clock.set(start);
    let replica = s.replica("a");
    s.settle().await;
    for i in 1..=3 {
        let slot = start + Duration::seconds(i);
        s.clock.set(slot);
        s.wait_fired(schedule, slot).await;
    }
    replica.stop().await;
    s.stop();
}
