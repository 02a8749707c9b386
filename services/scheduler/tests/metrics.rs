//! `/metrics` and `/health/ready` of a scheduler replica on a manual clock, against the
//! real command service, Postgres and NATS. A test binary of its own: metrics are
//! process-wide, so no other test's fired slots may move the histogram asserted here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../../../shared/service/tests/support/scrape.rs"]
mod scrape;

use std::time::Duration;

use chrono::{DateTime, Timelike as _, Utc};
use flexcore_config::{SchedulerSettings, Settings};
use flexcore_scheduler::{Clock, ManualClock};
use flexcore_testkit::{wait_until, TestDb, TestNats};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

async fn ok(client: &async_nats::Client, command: &str, body: Value) -> Value {
    let reply = tokio::time::timeout(
        Duration::from_secs(15),
        client.request(
            format!("flexcore.cmd.{command}"),
            serde_json::to_vec(&body).unwrap().into(),
        ),
    )
    .await
    .expect("reply within 15 s")
    .expect("request");
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["ok"], json!(true), "{command} {body} -> {reply}");
    reply
}

fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fire_lag_histogram_counts_a_fired_slot_and_ready_needs_the_stream_and_the_log_replayed() {
    flexcore_testkit::init_tracing();
    let db = TestDb::create().await.unwrap();
    let nats = TestNats::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let mut settings = Settings::default();
    settings.database.url = flexcore_config::Secret::new(db.url.clone());
    nats.settings_for("command", &mut settings);
    settings.relay.idle_poll = Duration::from_millis(50);
    let shutdown = CancellationToken::new();
    {
        let (token, s) = (shutdown.clone(), settings.clone());
        let (pool, service_client) = flexcore_command::connect(&s).await.unwrap();
        tokio::spawn(async move { flexcore_command::run(&s, service_client, pool, token).await.unwrap() });
    }

    let scheduler_client = nats.client().await.unwrap();
    let checks = flexcore_scheduler::metrics::checks(&scheduler_client);
    let addr = flexcore_service::admin::spawn("127.0.0.1:0", "flexcore-scheduler", checks, shutdown.clone())
        .await
        .unwrap()
        .unwrap();
    // The stream is there, but no replica has replayed the log: not ready yet.
    wait_until(WAIT, "the events stream there", || async {
        let (_, body) = scrape::ready(addr).await;
        scrape::check_ok(&body, "stream:FLEXCORE_EVENTS") == Some(true)
    })
    .await
    .unwrap();
    let (status, body) = scrape::ready(addr).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(scrape::check_ok(&body, "serving:schedules"), Some(false), "{body}");
    flexcore_testkit::nats::commands_answered(&client).await.unwrap();

    let digest = format!("sha256:{}", "ab".repeat(32));
    for (plugin, kind) in [("csv", "extractor"), ("jsonl", "loader")] {
        let body = json!({"name": plugin, "version": "1.0.0", "kind": kind, "module_digest": digest});
        ok(&client, "plugin.register", body).await;
    }
    let steps = json!([{"plugin": "csv@1.0.0"}, {"plugin": "jsonl@1.0.0"}]);
    let pipeline = ok(
        &client,
        "pipeline.create",
        json!({"name": "hourly", "owner": "data", "steps": steps}),
    )
    .await;
    let schedule = ok(
        &client,
        "schedule.create",
        json!({"pipeline_id": pipeline["aggregate_id"], "cron": "* * * * *"}),
    )
    .await;
    let schedule: uuid::Uuid = schedule["aggregate_id"].as_str().unwrap().parse().unwrap();

    let clock = ManualClock::new(whole_second(Utc::now()));
    let replica = {
        let settings = SchedulerSettings {
            instance_id: "solo".to_owned(),
            presence_interval: Duration::from_millis(150),
            ..SchedulerSettings::default()
        };
        let (clock, token) = (Clock::Manual(clock.clone()), shutdown.clone());
        let credentials = nats.credentials("scheduler").unwrap();
        tokio::spawn(async move {
            flexcore_scheduler::run(
                &settings,
                scheduler_client,
                credentials,
                Duration::from_secs(5),
                clock,
                token,
            )
            .await
        })
    };
    // Registered when the replica starts (the task above may not have run yet), before
    // any slot fires: the clock has not moved.
    let registered = wait_until(WAIT, "the fire-lag histogram registered at start", || async {
        scrape::scrape(addr)
            .await
            .has_type("flexcore_schedule_fire_lag_seconds", "histogram")
    })
    .await;
    let before = scrape::scrape(addr).await;
    assert!(registered.is_ok(), "registered at start: {}", before.text);
    // Ready once the replica has replayed the log (a few events here).
    wait_until(WAIT, "ready (the log replayed)", || async {
        scrape::ready(addr).await.0 == 200
    })
    .await
    .unwrap();
    let (_, body) = scrape::ready(addr).await;
    assert_eq!(scrape::check_ok(&body, "serving:schedules"), Some(true), "{body}");

    // The clock jumps 3 s past the next minute's slot: it fires 3 s late (whether the
    // replica was live before the jump or goes live after it: a catch-up of one slot).
    let next_minute = whole_second(Utc::now()) + chrono::Duration::minutes(1);
    let slot = next_minute - chrono::Duration::seconds(i64::from(next_minute.second()));
    clock.set(slot + chrono::Duration::seconds(3));
    let run = flexcore_contracts::ids::scheduled_run_id(schedule, slot);
    wait_until(WAIT, "the slot's run requested", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
            .bind(run)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        n > 0
    })
    .await
    .unwrap();

    let after = scrape::scrape(addr).await;
    let delta = |name: &str, labels: &[(&str, &str)]| after.count(name, labels) - before.count(name, labels);
    assert_eq!(
        delta("flexcore_schedule_fire_lag_seconds_count", &[]),
        1.0,
        "{}",
        after.text
    );
    let sum = delta("flexcore_schedule_fire_lag_seconds_sum", &[]);
    assert!((2.9..3.1).contains(&sum), "lag sum {sum}: {}", after.text);
    let bucket = |le: &str| delta("flexcore_schedule_fire_lag_seconds_bucket", &[("le", le)]);
    assert_eq!(bucket("2.5"), 0.0, "{}", after.text);
    assert_eq!(bucket("5"), 1.0, "{}", after.text);
    assert_eq!(bucket("+Inf"), 1.0, "{}", after.text);

    shutdown.cancel();
    replica.await.unwrap().unwrap();
}
