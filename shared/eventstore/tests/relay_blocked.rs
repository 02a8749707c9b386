//! The relay's blocked mark (what the command service's readiness reports): set when
//! publishing fails at the same event for [`relay::BLOCKED_AFTER`], whatever the cause,
//! cleared when a round publishes again and whenever the candidate stops leading.
//!
//! Its own test binary: the mark is per process, and the relays of other tests must not
//! set or clear it meanwhile. The tests here take turns for the same reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use async_nats::jetstream;
use flexcore_contracts::{subjects, EventMetadata};
use flexcore_eventstore::metrics::relay_block;
use flexcore_eventstore::relay::{self, RelayConfig, RELAY_LOCK_KEY};
use flexcore_eventstore::streams::{ensure_streams, events_stream_config, StreamSettings};
use flexcore_eventstore::{AppendOutcome, AppendRequest, EventStore, NewEvent};
use flexcore_testkit::{wait_until, TestDb, TestNats};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The tests share the process's mark: one at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn fast() -> RelayConfig {
    RelayConfig {
        batch_size: 200,
        idle_poll: Duration::from_millis(50),
        leader_retry: Duration::from_millis(100),
        publish_timeout: Duration::from_secs(5),
        signer: flexcore_testkit::nats::test_identity("command").unwrap(),
    }
}

/// Appends one `pipeline.paused` event with `data`; returns its id.
async fn append(db: &TestDb, data: serde_json::Value) -> Uuid {
    let store = EventStore::new(db.pool.clone(), Default::default());
    let event = NewEvent {
        event_id: Uuid::now_v7(),
        aggregate_type: "pipeline".into(),
        aggregate_id: Uuid::now_v7(),
        version: 1,
        event_type: "pipeline.paused".into(),
        schema_version: 1,
        data: data.into(),
        metadata: EventMetadata::default(),
    };
    let out = store
        .append(AppendRequest {
            command_id: None,
            command_type: "pipeline.pause".into(),
            payload_hash: String::new(),
            events: vec![event.clone()],
            claims: Vec::new(),
            releases: Vec::new(),
            slot_acquire: None,
            slot_release: None,
            reply: None,
            checks: Vec::new(),
        })
        .await
        .unwrap();
    assert!(matches!(out, AppendOutcome::Committed { .. }), "{out:?}");
    event.event_id
}

/// Messages in `FLEXCORE_EVENTS`.
async fn published(js: &jetstream::Context) -> u64 {
    let mut stream = js.get_stream(subjects::EVENTS_STREAM).await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// A leader that JetStream keeps refusing (the events stream no longer takes the event
/// subjects) goes on retrying without a mark through a transient-length failure, then
/// marks itself blocked naming the event and the cause; once the stream is fixed it
/// publishes the event and the mark is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_failing_at_the_same_event_reports_it_and_recovers() {
    let _turn = TURN.lock().await;
    flexcore_testkit::init_tracing();
    let db = TestDb::create().await.unwrap();
    let nats = TestNats::start().await.unwrap();
    let js = jetstream::new(nats.client().await.unwrap());
    ensure_streams(&js, &StreamSettings::default()).await.unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay::run(
        (*db.pool.connect_options()).clone(),
        js.clone(),
        fast(),
        stop.clone(),
    ));
    append(&db, serde_json::json!({"n": 1})).await;
    wait_until(Duration::from_secs(10), "the first event is published", || async {
        published(&js).await == 1
    })
    .await
    .unwrap();

    // The stream is changed to capture other subjects: every publish is refused.
    let mut wrong = events_stream_config(&StreamSettings::default());
    wrong.subjects = vec!["flexcore.elsewhere.>".to_owned()];
    js.update_stream(&wrong).await.unwrap();
    let held = append(&db, serde_json::json!({"n": 2})).await;
    let failing_since = Instant::now();

    // Not at once: a NATS restart fails like this for a second or two.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(relay_block(), None, "blocked after 10 s of failures");

    wait_until(
        relay::BLOCKED_AFTER + Duration::from_secs(15),
        "the relay reports itself blocked",
        || async { relay_block().is_some() },
    )
    .await
    .unwrap();
    assert!(failing_since.elapsed() >= relay::BLOCKED_AFTER);
    let block = relay_block().unwrap();
    assert!(block.reason.contains(&held.to_string()), "{block:?}");
    assert!(block.reason.contains("nats:"), "the cause is named: {block:?}");
    assert!(
        block.since <= chrono::Utc::now() - chrono::Duration::from_std(relay::BLOCKED_AFTER).unwrap(),
        "since the first failure: {block:?}"
    );
    assert_eq!(published(&js).await, 1);

    // The operator restores the stream: the event is published and the mark cleared.
    ensure_streams(&js, &StreamSettings::default()).await.unwrap();
    wait_until(Duration::from_secs(10), "the held event is published", || async {
        published(&js).await == 2
    })
    .await
    .unwrap();
    wait_until(Duration::from_secs(5), "the mark is cleared", || async {
        relay_block().is_none()
    })
    .await
    .unwrap();
    stop.cancel();
    task.await.unwrap();
}

/// A blocked leader whose leadership passes to another candidate (here: the test, which
/// takes the lock after the leader's session ended) is no longer blocked — what holds the
/// log is the new leader's to report — and is blocked again once it leads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_relay_that_stops_leading_is_no_longer_blocked() {
    let _turn = TURN.lock().await;
    flexcore_testkit::init_tracing();
    let db = TestDb::create().await.unwrap();
    let mut nats = TestNats::start().await.unwrap();
    nats.set_max_payload("64KB");
    nats.restart().await.unwrap();
    let js = jetstream::new(nats.client().await.unwrap());
    ensure_streams(&js, &StreamSettings::default()).await.unwrap();
    // Larger than the server takes: blocks the relay at once.
    let held = append(&db, serde_json::json!({"blob": "b".repeat(100_000)})).await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay::run(
        (*db.pool.connect_options()).clone(),
        js.clone(),
        fast(),
        stop.clone(),
    ));
    wait_until(Duration::from_secs(10), "the relay reports itself blocked", || async {
        relay_block().is_some_and(|b| b.reason.contains(&held.to_string()))
    })
    .await
    .unwrap();

    // The leader's session ends (its lock with it) and another takes the lock first.
    let mut other = sqlx::PgConnection::connect_with(&db.pool.connect_options())
        .await
        .unwrap();
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'flexcore-relay') t",
    )
    .fetch_one(&mut other)
    .await
    .unwrap();
    assert_eq!(ended, 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(RELAY_LOCK_KEY)
            .fetch_one(&mut other)
            .await
            .unwrap();
        if locked {
            break;
        }
        assert!(Instant::now() < deadline, "the lock was not released");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_until(
        Duration::from_secs(10),
        "the former leader is no longer blocked",
        || async { relay_block().is_none() },
    )
    .await
    .unwrap();
    // And stays so while it stands by.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(relay_block(), None);

    // Back in the lead, it is held by the same event again.
    other.close().await.unwrap();
    wait_until(Duration::from_secs(10), "blocked again as leader", || async {
        relay_block().is_some_and(|b| b.reason.contains(&held.to_string()))
    })
    .await
    .unwrap();
    stop.cancel();
    task.await.unwrap();
}
