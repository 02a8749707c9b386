//! An event in the log that the NATS server will not carry (a server restarted with a
//! smaller `max_payload` than when the event was written) holds the relay where it is:
//! nothing after it is published out of order and nothing is dropped. The command service
//! says so — `/health/ready` 503 naming the event, an error-level log line, the relay lag
//! growing — and publishes everything, in order, once the server admits the event again.

use std::net::SocketAddr;
use std::time::Duration;

use flexcore_contracts::EventMetadata;
use flexcore_contracts::OpaqueJson;
use flexcore_eventstore::NewEvent;
use flexcore_system_tests::procs::ServiceProcess;
use flexcore_testkit::{TestDb, TestNats};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::scrape;

struct Command {
    process: ServiceProcess,
    admin: SocketAddr,
}

fn start_command(db: &TestDb, nats: &TestNats, logs: &std::path::Path) -> Command {
    let port = flexcore_testkit::unused_port().unwrap();
    let admin = SocketAddr::from(([127, 0, 0, 1], port));
    let process = ServiceProcess::start_on(
        nats,
        "flexcore-command",
        &[
            ("FLEXCORE__DATABASE__URL", db.url.clone()),
            ("FLEXCORE__NATS__URL", nats.url.clone()),
            ("FLEXCORE__ADMIN__LISTEN", admin.to_string()),
            ("FLEXCORE__RELAY__IDLE_POLL_MS", "50".into()),
        ],
        logs,
    );
    Command { process, admin }
}

async fn request(client: &async_nats::Client, subject: &str, body: Value) -> Value {
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(subject.to_owned(), serde_json::to_vec(&body).unwrap().into()),
    )
    .await
    .unwrap_or_else(|_| panic!("{subject}: no reply"))
    .unwrap();
    serde_json::from_slice(&reply.payload).unwrap()
}

async fn ok(client: &async_nats::Client, subject: &str, body: Value) -> Value {
    let reply = request(client, subject, body).await;
    assert_eq!(reply["ok"], json!(true), "{subject}: {reply}");
    reply
}

/// The event ids in `FLEXCORE_EVENTS`, in stream order.
async fn streamed(js: &async_nats::jetstream::Context) -> Vec<Uuid> {
    let mut stream = js.get_stream("FLEXCORE_EVENTS").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut ids = Vec::new();
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
        ids.push(envelope["event_id"].as_str().unwrap().parse().unwrap());
    }
    ids
}

async fn logged(db: &TestDb) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT event_id FROM events ORDER BY global_position")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

async fn readiness(admin: SocketAddr) -> (u16, Value) {
    let (status, _, body) = scrape::get(admin, "/health/ready").await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_bus_refuses_holds_the_relay_visibly_and_is_published_in_order_later() {
    flexcore_testkit::init_tracing();
    let logs = tempfile::tempdir().unwrap();
    let db = TestDb::create().await.unwrap();
    let mut nats = TestNats::start().await.unwrap();
    nats.set_max_payload("1MB");
    nats.restart().await.unwrap();
    let client = nats.client().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());

    let mut command = start_command(&db, &nats, logs.path());
    command
        .process
        .wait_logged("serving commands", Duration::from_secs(60))
        .await;
    for (name, kind) in [("x", "extractor"), ("y", "loader")] {
        ok(
            &client,
            "flexcore.cmd.plugin.register",
            json!({"name": name, "version": "1.0.0", "kind": kind, "module_digest": format!("sha256:{}", "a".repeat(64))}),
        )
        .await;
    }
    let created = ok(
        &client,
        "flexcore.cmd.pipeline.create",
        json!({"name": "held", "owner": "o", "steps": [{"plugin": "x@1.0.0"}, {"plugin": "y@1.0.0"}]}),
    )
    .await;
    let pipeline_id: Uuid = created["aggregate_id"].as_str().unwrap().parse().unwrap();
    flexcore_testkit::wait_until(Duration::from_secs(30), "the first events are published", || async {
        streamed(&js).await.len() == logged(&db).await.len()
    })
    .await
    .unwrap();
    command.process.terminate();
    assert!(command.process.exited_within(Duration::from_secs(15)).await);

    // A 600 KB STATE committed while the server took 1 MB messages: the event is in the
    // log, not yet published (the command service is down).
    let big = NewEvent {
        event_id: Uuid::now_v7(),
        aggregate_type: "pipeline".into(),
        aggregate_id: pipeline_id,
        version: 2,
        event_type: "pipeline.state_committed".into(),
        schema_version: 1,
        data: OpaqueJson::parse(&format!(r#"{{"state":{{"blob":"{}"}}}}"#, "s".repeat(600_000))).unwrap(),
        metadata: EventMetadata::default(),
    };
    flexcore_system_tests::append_directly(&db.pool, "pipeline.commit_state", big.clone()).await;

    // The server comes back taking at most 512 KB per message.
    drop(client);
    nats.set_max_payload("512KB");
    nats.restart().await.unwrap();
    let client = nats.client().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut command = start_command(&db, &nats, logs.path());
    command
        .process
        .wait_logged("serving commands", Duration::from_secs(60))
        .await;
    let published_before = streamed(&js).await.len();

    // Unready, naming the event; an error in the log; the relay lag shows the wait.
    let admin = command.admin;
    flexcore_testkit::wait_until(
        Duration::from_secs(20),
        "readiness reports the blocked relay",
        || async { readiness(admin).await.0 == 503 },
    )
    .await
    .unwrap();
    let (_, body) = readiness(admin).await;
    let relay = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "relay")
        .unwrap_or_else(|| panic!("no relay check in {body}"))
        .clone();
    let reason = relay.to_string();
    assert!(reason.contains(&big.event_id.to_string()), "{relay}");
    assert!(reason.contains("blocked"), "{relay}");
    command
        .process
        .wait_logged("relay blocked", Duration::from_secs(10))
        .await;
    let log = command.process.log_text();
    let line = log.lines().find(|l| l.contains("relay blocked")).unwrap();
    assert!(
        line.contains("ERROR") && line.contains(&big.event_id.to_string()),
        "{line}"
    );

    // Commands are still accepted; their events wait behind the held one.
    let paused = ok(
        &client,
        "flexcore.cmd.pipeline.pause",
        json!({"pipeline_id": pipeline_id, "reason": "behind the held event"}),
    )
    .await;
    assert_eq!(paused["version"], json!(3));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        streamed(&js).await.len(),
        published_before,
        "nothing overtakes the held event"
    );
    let (_, _, metrics) = scrape::get(admin, "/metrics").await.unwrap();
    let lag = scrape::parse(&metrics)
        .unwrap()
        .value("flexcore_relay_lag_seconds", &[])
        .unwrap();
    assert!(lag > 0.0, "relay lag {lag}");

    // The operator's fix (docs/troubleshooting.md): give the server room again.
    drop(client);
    nats.set_max_payload("1MB");
    nats.restart().await.unwrap();
    let client = nats.client().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    flexcore_testkit::wait_until(Duration::from_secs(30), "everything is published", || async {
        streamed(&js).await.len() == logged(&db).await.len()
    })
    .await
    .unwrap();
    assert_eq!(
        streamed(&js).await,
        logged(&db).await,
        "the stream is the log, in order"
    );
    flexcore_testkit::wait_until(Duration::from_secs(20), "ready again", || async {
        readiness(admin).await.0 == 200
    })
    .await
    .unwrap();
    let held = js
        .get_stream("FLEXCORE_EVENTS")
        .await
        .unwrap()
        .get_last_raw_message_by_subject(&format!("flexcore.evt.pipeline.{pipeline_id}.state_committed"))
        .await
        .unwrap();
    assert!(held.payload.len() > 600_000, "the held event is published whole");
    command.process.terminate();
    assert!(command.process.exited_within(Duration::from_secs(15)).await);
}

/// Any failure that keeps the relay at the same event is reported like an oversized one:
/// here `FLEXCORE_EVENTS` is changed (while the command service runs) to capture other
/// subjects, so JetStream refuses every publish while the stream still exists. Readiness
/// stays 200 through a failure as short as a NATS restart, then answers 503 naming the
/// held event and the cause, with one error-level line; once the stream is fixed the
/// event is published in order and readiness returns to 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_refused_by_a_misconfigured_stream_turns_unready_and_recovers() {
    flexcore_testkit::init_tracing();
    let logs = tempfile::tempdir().unwrap();
    let db = TestDb::create().await.unwrap();
    let nats = TestNats::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut command = start_command(&db, &nats, logs.path());
    command
        .process
        .wait_logged("serving commands", Duration::from_secs(60))
        .await;
    let admin = command.admin;
    let register = |name: &str| json!({"name": name, "version": "1.0.0", "kind": "extractor", "module_digest": format!("sha256:{}", "a".repeat(64))});
    ok(&client, "flexcore.cmd.plugin.register", register("x")).await;
    flexcore_testkit::wait_until(Duration::from_secs(10), "the first event is published", || async {
        streamed(&js).await.len() == logged(&db).await.len()
    })
    .await
    .unwrap();
    assert_eq!(readiness(admin).await.0, 200);

    // The stream now takes other subjects: it exists (its own check passes), but no
    // publish of the relay is stored.
    let settings = flexcore_eventstore::streams::StreamSettings::default();
    let mut wrong = flexcore_eventstore::streams::events_stream_config(&settings);
    wrong.subjects = vec!["flexcore.elsewhere.>".to_owned()];
    js.update_stream(&wrong).await.unwrap();
    ok(&client, "flexcore.cmd.plugin.register", register("y")).await;
    let held = *logged(&db).await.last().unwrap();

    // Not unready at once: a restart of NATS fails like this for a second or two.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, body) = readiness(admin).await;
    assert_eq!(status, 200, "unready after 5 s: {body}");

    flexcore_testkit::wait_until(
        flexcore_eventstore::relay::BLOCKED_AFTER + Duration::from_secs(30),
        "readiness reports the blocked relay",
        || async { readiness(admin).await.0 == 503 },
    )
    .await
    .unwrap();
    let (_, body) = readiness(admin).await;
    let checks = body["checks"].as_array().unwrap();
    let relay = checks
        .iter()
        .find(|c| c["name"] == "relay")
        .unwrap_or_else(|| panic!("no relay check in {body}"))
        .to_string();
    assert!(relay.contains("blocked since"), "{relay}");
    assert!(relay.contains(&held.to_string()), "the held event is named: {relay}");
    assert!(relay.contains("no stream found"), "the cause is named: {relay}");
    let failing: Vec<_> = checks.iter().filter(|c| c["ok"] == json!(false)).collect();
    assert_eq!(failing.len(), 1, "only the relay check fails: {body}");
    command
        .process
        .wait_logged("relay blocked", Duration::from_secs(10))
        .await;
    // Logged once, not at every retry.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = command.process.log_text();
    let lines: Vec<_> = log.lines().filter(|l| l.contains("relay blocked")).collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("ERROR") && lines[0].contains(&held.to_string()),
        "{}",
        lines[0]
    );
    let (_, _, metrics) = scrape::get(admin, "/metrics").await.unwrap();
    let lag = scrape::parse(&metrics)
        .unwrap()
        .value("flexcore_relay_lag_seconds", &[])
        .unwrap();
    assert!(lag > 0.0, "relay lag {lag}");

    // The operator's fix: the stream's subjects as the command service creates them.
    flexcore_eventstore::streams::ensure_streams(&js, &settings)
        .await
        .unwrap();
    flexcore_testkit::wait_until(Duration::from_secs(10), "everything is published", || async {
        streamed(&js).await.len() == logged(&db).await.len()
    })
    .await
    .unwrap();
    assert_eq!(
        streamed(&js).await,
        logged(&db).await,
        "the stream is the log, in order"
    );
    flexcore_testkit::wait_until(Duration::from_secs(10), "ready again", || async {
        readiness(admin).await.0 == 200
    })
    .await
    .unwrap();
    command
        .process
        .wait_logged("relay unblocked", Duration::from_secs(5))
        .await;
    command.process.terminate();
    assert!(command.process.exited_within(Duration::from_secs(15)).await);
}
