use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use flexcore_contracts::{subjects, EventEnvelope};
use flexcore_eventstore::relay::{self, RelayConfig};
use flexcore_eventstore::streams::{ensure_streams, StreamSettings};
use flexcore_eventstore::AppendOutcome;
use flexcore_testkit::{TestDb, TestNats};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{event, request, store};

fn fast() -> RelayConfig {
    RelayConfig {
        batch_size: 200,
        idle_poll: Duration::from_millis(50),
        leader_retry: Duration::from_millis(100),
        publish_timeout: Duration::from_secs(5),
        signer: flexcore_testkit::nats::test_identity("command").unwrap(),
    }
}

/// Reads the whole events stream; returns envelopes with their subject and headers.
async fn drain(js: &jetstream::Context, expect: usize) -> Vec<(String, async_nats::HeaderMap, EventEnvelope)> {
    let stream = js.get_stream(subjects::EVENTS_STREAM).await.unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    let mut unique = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while unique.len() < expect && Instant::now() < deadline {
        let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(2), messages.next()).await else {
            continue;
        };
        let envelope: EventEnvelope = serde_json::from_slice(&m.payload).unwrap();
        // Every message is signed by the relay's identity (role command).
        let trust = flexcore_testkit::nats::test_trust().unwrap();
        let signer = trust
            .verify(
                m.subject.as_str(),
                m.headers.as_ref(),
                &m.payload,
                &[flexcore_security::Role::Command],
                None,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", m.subject));
        assert_eq!(signer.name, "command");
        unique.insert(envelope.event_id);
        out.push((m.subject.to_string(), m.headers.clone().unwrap_or_default(), envelope));
    }
    out
}

#[tokio::test]
async fn relay_publishes_with_subject_and_headers() {
    let db = TestDb::create().await.unwrap();
    let nats = TestNats::start().await.unwrap();
    let js = jetstream::new(nats.client().await.unwrap());
    ensure_streams(&js, &StreamSettings::default()).await.unwrap();
    ensure_streams(&js, &StreamSettings::default()).await.unwrap(); // idempotent
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay::run(
        (*db.pool.connect_options()).clone(),
        js.clone(),
        fast(),
        stop.clone(),
    ));
    let store = store(&db);
    let id = Uuid::now_v7();
    let AppendOutcome::Committed { positions, .. } = store.append(request(None, vec![event(id, 1)])).await.unwrap()
    else {
        panic!()
    };
    let got = drain(&js, 1).await;
    let (subject, headers, envelope) = &got[0];
    assert_eq!(subject, &format!("flexcore.evt.pipeline.{id}.paused"));
    assert_eq!(
        headers.get("Nats-Msg-Id").unwrap().as_str(),
        envelope.event_id.to_string()
    );
    assert_eq!(
        headers.get("Flexcore-Global-Position").unwrap().as_str(),
        positions[0].to_string()
    );
    assert_eq!(headers.get("Flexcore-Version").unwrap().as_str(), "1");
    assert_eq!(headers.get("Flexcore-Schema-Version").unwrap().as_str(), "1");
    assert_eq!(envelope.event_type, "pipeline.paused");
    assert_eq!(envelope.global_position, positions[0]);
    stop.cancel();
    task.await.unwrap();
    let cp = relay::checkpoint(&db.pool).await.unwrap();
    assert_eq!(cp.global_position, positions[0]);
}

/// Two relay candidates; the leader's database connection is killed repeatedly while
/// events flow. Every event still reaches JetStream, exactly once after de-duplication
/// by event id, and in version order per aggregate.
#[tokio::test]
async fn relay_fails_over_without_losing_or_reordering_events() {
    let db = TestDb::create().await.unwrap();
    let nats = TestNats::start().await.unwrap();
    let js = jetstream::new(nats.client().await.unwrap());
    ensure_streams(&js, &StreamSettings::default()).await.unwrap();
    let stop = CancellationToken::new();
    let options = (*db.pool.connect_options()).clone();
    let relays: Vec<_> = (0..2)
        .map(|_| tokio::spawn(relay::run(options.clone(), js.clone(), fast(), stop.clone())))
        .collect();

    let store = store(&db);
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = Uuid::now_v7();
                for v in 1..=60u64 {
                    let out = store.append(request(None, vec![event(id, v)])).await.unwrap();
                    assert!(matches!(out, AppendOutcome::Committed { .. }), "{out:?}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    // Kill whichever relay holds the lock, three times, while the writers run.
    let mut kills = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'flexcore-relay' \
             AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)) t",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        kills += killed;
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(kills >= 2, "the leader was killed {kills} times");
    let got = drain(&js, 8 * 60).await;
    let mut by_id = HashMap::new();
    let mut per_aggregate: HashMap<Uuid, Vec<u64>> = HashMap::new();
    for (_, _, e) in &got {
        if by_id.insert(e.event_id, e.global_position).is_none() {
            per_aggregate.entry(e.aggregate_id).or_default().push(e.version);
        }
    }
    assert_eq!(
        by_id.len(),
        8 * 60,
        "every event published exactly once after de-duplication"
    );
    for (id, versions) in per_aggregate {
        assert_eq!(versions, (1..=60).collect::<Vec<_>>(), "aggregate {id} out of order");
    }
    stop.cancel();
    for r in relays {
        r.await.unwrap();
    }
}
