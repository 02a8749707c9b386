//! `/metrics` and `/health/ready` of the projection service, against real Postgres and
//! NATS. A test binary of its own: metrics are process-wide, so no other test's
//! projections or queries may move what this one asserts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../../../shared/service/tests/support/scrape.rs"]
mod scrape;

use std::time::Duration;

use flexcore_config::Settings;
use flexcore_testkit::{wait_until, TestDb, TestNats};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);
const PROJECTIONS: [&str; 5] = ["plugins", "pipelines", "runs", "schedules", "audit"];

async fn request(client: &async_nats::Client, subject: &str, body: Value) -> Value {
    let reply = tokio::time::timeout(
        Duration::from_secs(15),
        client.request(subject.to_owned(), serde_json::to_vec(&body).unwrap().into()),
    )
    .await
    .expect("reply within 15 s")
    .expect("request");
    serde_json::from_slice(&reply.payload).unwrap()
}

fn spawn_projection(settings: &Settings, shutdown: &CancellationToken) -> impl std::future::Future<Output = ()> {
    let (mut s, token) = (settings.clone(), shutdown.clone());
    flexcore_testkit::nats::settings_as("projection", &mut s);
    async move {
        let (pool, nats) = flexcore_projection::connect(&s).await.unwrap();
        tokio::spawn(async move { flexcore_projection::run(&s, nats, pool, token).await.unwrap() });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_gauges_and_readiness_follow_the_projections_and_queries_are_counted() {
    flexcore_testkit::init_tracing();
    let db = TestDb::create().await.unwrap();
    let nats = TestNats::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let mut settings = Settings::default();
    settings.database.url = flexcore_config::Secret::new(db.url.clone());
    nats.settings_for("command", &mut settings);
    settings.database.max_connections = 8;
    settings.relay.idle_poll = Duration::from_millis(50);
    settings.relay.leader_retry = Duration::from_millis(100);
    settings.projection.leader_retry = Duration::from_millis(100);
    settings.admin.ready_max_lag_events = 3;
    let shutdown = CancellationToken::new();
    {
        let (s, token) = (settings.clone(), shutdown.clone());
        let (pool, nats) = flexcore_command::connect(&s).await.unwrap();
        tokio::spawn(async move { flexcore_command::run(&s, nats, pool, token).await.unwrap() });
    }

    // A replica that only answers queries: nothing projects yet.
    let mut query_only = settings.clone();
    query_only.projection.workers_enabled = false;
    flexcore_testkit::nats::settings_as("projection", &mut query_only);
    let (pool, service_client) = flexcore_projection::connect(&query_only).await.unwrap();
    let checks = flexcore_projection::metrics::checks(&query_only, &service_client, &pool);
    let addr = flexcore_service::admin::spawn("127.0.0.1:0", "flexcore-projection", checks, shutdown.clone())
        .await
        .unwrap()
        .unwrap();
    spawn_projection(&query_only, &shutdown).await;
    wait_until(WAIT, "queries answered", || async {
        matches!(
            tokio::time::timeout(
                Duration::from_millis(500),
                client.request("flexcore.qry.projection.list", "{}".into())
            )
            .await,
            Ok(Ok(_))
        )
    })
    .await
    .unwrap();

    let digest = format!("sha256:{}", "ab".repeat(32));
    for (name, kind) in [("csv", "extractor"), ("jsonl", "loader")] {
        let body = json!({"name": name, "version": "1.0.0", "kind": kind, "module_digest": digest});
        let reply = request(&client, "flexcore.cmd.plugin.register", body).await;
        assert_eq!(reply["ok"], json!(true), "{reply}");
    }
    let steps = json!([{"plugin": "csv@1.0.0"}, {"plugin": "jsonl@1.0.0"}]);
    let mut pipeline = String::new();
    for name in ["orders", "customers", "invoices"] {
        let body = json!({"name": name, "owner": "data", "steps": steps});
        let reply = request(&client, "flexcore.cmd.pipeline.create", body).await;
        assert_eq!(reply["ok"], json!(true), "{reply}");
        pipeline = reply["aggregate_id"].as_str().unwrap().to_owned();
    }

    // Five events behind everywhere: the gauges say so and the replica is unready.
    wait_until(WAIT, "lag of 5 sampled", || async {
        let m = scrape::scrape(addr).await;
        PROJECTIONS
            .iter()
            .all(|p| m.value("flexcore_projection_lag_events", &[("projection", p)]) == Some(5.0))
    })
    .await
    .unwrap();
    let (status, body) = scrape::ready(addr).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(scrape::check_ok(&body, "projection_lag"), Some(false), "{body}");
    assert!(body.to_string().contains("pipelines is 5 events behind"), "{body}");
    assert_eq!(scrape::check_ok(&body, "stream:FLEXCORE_EVENTS"), Some(true), "{body}");

    // A replica that projects catches everything up: lag 0, ready.
    spawn_projection(&settings, &shutdown).await;
    wait_until(WAIT, "caught up", || async {
        let m = scrape::scrape(addr).await;
        PROJECTIONS
            .iter()
            .all(|p| m.value("flexcore_projection_lag_events", &[("projection", p)]) == Some(0.0))
    })
    .await
    .unwrap();
    let (status, body) = scrape::ready(addr).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(scrape::check_ok(&body, "projection_lag"), Some(true), "{body}");

    // Queries by type and status.
    let before = scrape::scrape(addr).await;
    let found = request(&client, "flexcore.qry.pipeline.get", json!({"id": pipeline})).await;
    assert_eq!(found["ok"], json!(true), "{found}");
    let missing = request(
        &client,
        "flexcore.qry.pipeline.get",
        json!({"id": uuid::Uuid::new_v4()}),
    )
    .await;
    assert_eq!(missing["error"]["code"], json!("not_found"), "{missing}");
    let listed = request(&client, "flexcore.qry.pipeline.list", json!({})).await;
    assert_eq!(listed["ok"], json!(true), "{listed}");
    let unknown = request(&client, "flexcore.qry.nothing.get", json!({})).await;
    assert_eq!(unknown["error"]["code"], json!("validation_failed"), "{unknown}");
    let after = scrape::scrape(addr).await;
    assert!(
        after.has_type("flexcore_queries_executed_total", "counter"),
        "{}",
        after.text
    );
    assert!(
        after.has_type("flexcore_projection_lag_events", "gauge"),
        "{}",
        after.text
    );
    let executed = "flexcore_queries_executed_total";
    let delta = |labels: &[(&str, &str)]| after.count(executed, labels) - before.count(executed, labels);
    assert_eq!(
        delta(&[("query_type", "pipeline.get"), ("status", "ok")]),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(
        delta(&[("query_type", "pipeline.get"), ("status", "not_found")]),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(
        delta(&[("query_type", "pipeline.list"), ("status", "ok")]),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(
        delta(&[("query_type", "unknown"), ("status", "validation_failed")]),
        1.0,
        "{}",
        after.text
    );
    // The list above was read (a miss); the same list again, with nothing applied since,
    // is answered from the page kept (a hit). A page is kept for at most a second, so
    // on a machine slow enough to take longer between the two, try again.
    let lookups = "flexcore_list_cache_lookups_total";
    assert_eq!(
        after.count(lookups, &[("outcome", "miss")]) - before.count(lookups, &[("outcome", "miss")]),
        1.0,
        "{}",
        after.text
    );
    let mut hits = 0.0;
    for _ in 0..5 {
        let before = scrape::scrape(addr).await;
        for _ in 0..2 {
            let listed = request(&client, "flexcore.qry.pipeline.list", json!({"state": "active"})).await;
            assert_eq!(listed["ok"], json!(true), "{listed}");
        }
        let after = scrape::scrape(addr).await;
        hits = after.count(lookups, &[("outcome", "hit")]) - before.count(lookups, &[("outcome", "hit")]);
        if hits > 0.0 {
            break;
        }
    }
    assert!(hits >= 1.0, "a repeated list is answered from the page kept");

    shutdown.cancel();
}
