//! `/metrics` and `/health/ready` of the command service, against real Postgres and NATS.
//! A test binary of its own: metrics are process-wide, so no other test's commands may
//! move the counters this one asserts exact changes of.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../../../shared/service/tests/support/scrape.rs"]
mod scrape;

use std::time::Duration;

use flexcore_config::Settings;
use flexcore_testkit::{wait_until, TestDb, TestNats};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

async fn send(client: &async_nats::Client, command: &str, body: Value) -> Value {
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(
            format!("flexcore.cmd.{command}"),
            serde_json::to_vec(&body).unwrap().into(),
        ),
    )
    .await
    .expect("reply within 10 s")
    .expect("request");
    serde_json::from_slice(&reply.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_commands_by_type_and_status_and_ready_needs_the_streams() {
    flexcore_testkit::init_tracing();
    let db = TestDb::create().await.unwrap();
    let nats = TestNats::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let mut settings = Settings::default();
    settings.database.url = flexcore_config::Secret::new(db.url.clone());
    nats.settings_for("command", &mut settings);
    settings.relay.idle_poll = Duration::from_millis(50);
    settings.relay.leader_retry = Duration::from_millis(100);
    let shutdown = CancellationToken::new();
    let (pool, service_client) = flexcore_command::connect(&settings).await.unwrap();
    let checks = flexcore_command::service::metrics::checks(&service_client, &pool);
    let addr = flexcore_service::admin::spawn("127.0.0.1:0", "flexcore-command", checks, shutdown.clone())
        .await
        .unwrap()
        .unwrap();
    let token = shutdown.clone();
    let task = tokio::spawn(async move { flexcore_command::run(&settings, service_client, pool, token).await });

    // Ready once the streams exist (run creates them).
    wait_until(WAIT, "ready", || async { scrape::ready(addr).await.0 == 200 })
        .await
        .unwrap();
    let (_, body) = scrape::ready(addr).await;
    for check in ["nats", "postgres", "stream:FLEXCORE_EVENTS", "stream:FLEXCORE_WORK"] {
        assert_eq!(scrape::check_ok(&body, check), Some(true), "{check}: {body}");
    }

    let before = scrape::scrape(addr).await;
    assert!(
        before.has_type("flexcore_relay_lag_seconds", "gauge"),
        "{}",
        before.text
    );
    assert!(before.value("process_resident_memory_bytes", &[]).unwrap() > 0.0);
    assert!(before.value("process_cpu_seconds_total", &[]).is_some());
    assert!(before.value("process_open_fds", &[]).unwrap() > 0.0);
    assert!(before.value("process_start_time_seconds", &[]).unwrap() > 1.6e9);

    let digest = format!("sha256:{}", "ab".repeat(32));
    for (name, kind) in [("csv", "extractor"), ("jsonl", "loader")] {
        let reply = send(
            &client,
            "plugin.register",
            json!({"name": name, "version": "1.0.0", "kind": kind, "module_digest": digest}),
        )
        .await;
        assert_eq!(reply["ok"], json!(true), "{reply}");
    }
    let steps = json!([{"plugin": "csv@1.0.0"}, {"plugin": "jsonl@1.0.0"}]);
    for name in ["orders", "customers", "invoices"] {
        let reply = send(
            &client,
            "pipeline.create",
            json!({"name": name, "owner": "data", "steps": steps}),
        )
        .await;
        assert_eq!(reply["ok"], json!(true), "{reply}");
    }
    let taken = send(
        &client,
        "pipeline.create",
        json!({"name": "orders", "owner": "data", "steps": steps}),
    )
    .await;
    assert_eq!(taken["error"]["code"], json!("conflict"), "{taken}");
    let invalid = send(&client, "pipeline.create", json!({"name": "no-steps"})).await;
    assert_eq!(invalid["error"]["code"], json!("validation_failed"), "{invalid}");
    let unknown = send(&client, "pipeline.explode", json!({})).await;
    assert_eq!(unknown["error"]["code"], json!("validation_failed"), "{unknown}");

    // The relay has published everything once the checkpoint holds the last event.
    let last: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    wait_until(WAIT, "relay caught up", || async {
        flexcore_eventstore::relay::checkpoint(&db.pool)
            .await
            .unwrap()
            .global_position
            == last as u64
    })
    .await
    .unwrap();

    let after = scrape::scrape(addr).await;
    assert!(
        after.has_type("flexcore_commands_processed_total", "counter"),
        "{}",
        after.text
    );
    assert!(
        after.has_type("flexcore_command_duration_seconds", "histogram"),
        "{}",
        after.text
    );
    assert!(
        after.has_type("flexcore_events_appended_total", "counter"),
        "{}",
        after.text
    );
    let processed = "flexcore_commands_processed_total";
    let delta = |name: &str, labels: &[(&str, &str)]| after.count(name, labels) - before.count(name, labels);
    let create = ("command_type", "pipeline.create");
    assert_eq!(delta(processed, &[create, ("status", "ok")]), 3.0, "{}", after.text);
    assert_eq!(
        delta(processed, &[create, ("status", "conflict")]),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(
        delta(processed, &[create, ("status", "validation_failed")]),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(
        delta(processed, &[("command_type", "plugin.register"), ("status", "ok")]),
        2.0,
        "{}",
        after.text
    );
    assert_eq!(
        delta(
            processed,
            &[("command_type", "unknown"), ("status", "validation_failed")]
        ),
        1.0,
        "{}",
        after.text
    );
    let duration = "flexcore_command_duration_seconds_count";
    assert_eq!(delta(duration, &[create]), 5.0, "{}", after.text);
    let inf = delta("flexcore_command_duration_seconds_bucket", &[create, ("le", "+Inf")]);
    assert_eq!(inf, 5.0, "{}", after.text);
    assert!(delta("flexcore_command_duration_seconds_sum", &[create]) > 0.0);

    let appended = "flexcore_events_appended_total";
    let created = [("aggregate_type", "pipeline"), ("event_type", "pipeline.created")];
    assert_eq!(delta(appended, &created), 3.0, "{}", after.text);
    let registered = [("aggregate_type", "plugin"), ("event_type", "plugin.registered")];
    assert_eq!(delta(appended, &registered), 2.0, "{}", after.text);
    let lag = after.value("flexcore_relay_lag_seconds", &[]).unwrap();
    assert!((0.0..30.0).contains(&lag), "relay lag {lag}");

    // A stream gone: unready, naming it.
    let js = nats.jetstream().await.unwrap();
    js.delete_stream("FLEXCORE_WORK").await.unwrap();
    let (status, body) = scrape::ready(addr).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(scrape::check_ok(&body, "stream:FLEXCORE_WORK"), Some(false), "{body}");
    assert_eq!(scrape::check_ok(&body, "stream:FLEXCORE_EVENTS"), Some(true), "{body}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
