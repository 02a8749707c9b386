use std::time::Duration;

use flexcore_dev::bench::commands::NO_SERVICE;
use flexcore_dev::bench::{BenchConfig, Phases};
use flexcore_testkit::{TestDb, TestNats};

use crate::{operator, spawn_service};

fn config(nats_url: &str, database_url: &str, clients: usize) -> BenchConfig {
    BenchConfig {
        nats: operator(nats_url),
        database_url: database_url.to_owned(),
        clients,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        phases: Phases {
            commands: true,
            raw: true,
        },
    }
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_measures_a_real_service_and_the_raw_ceiling() {
    let service = spawn_service().await;
    let report = flexcore_dev::bench::run(&config(&service.nats.url, &service.db.url, 4))
        .await
        .unwrap();

    let commands = report.commands.clone().unwrap();
    assert!(commands.accepted > 0, "{report:?}");
    assert!(commands.rejected.is_empty(), "{report:?}");
    assert!(commands.transport_errors.is_empty(), "{report:?}");
    assert!(commands.latency.samples >= commands.accepted && commands.latency.p99_ms > 0.0);
    let raw = report.raw.clone().unwrap();
    assert!(raw.inserts > 0 && raw.errors.is_empty(), "{report:?}");
    assert!(report.commands_to_raw_percent.unwrap() > 0.0);

    let toggles = count(
        &service.db,
        "SELECT count(*) FROM events WHERE event_type IN ('pipeline.paused', 'pipeline.resumed')",
    )
    .await;
    assert!(toggles >= i64::try_from(commands.accepted).unwrap(), "{toggles} events");
    assert_eq!(
        count(
            &service.db,
            "SELECT count(*) FROM events WHERE event_type = 'pipeline.archived'"
        )
        .await,
        4,
        "the bench pipelines are archived afterwards"
    );
    assert_eq!(count(&service.db, "SELECT count(*) FROM bench_raw_events").await, 0);

    // A second run finds the plugins registered (a `conflict`, which is fine).
    let mut again = config(&service.nats.url, &service.db.url, 2);
    again.phases.raw = false;
    let second = flexcore_dev::bench::run(&again).await.unwrap();
    assert!(second.commands.unwrap().accepted > 0);
    assert_eq!(
        count(
            &service.db,
            "SELECT count(*) FROM events WHERE event_type = 'plugin.registered'"
        )
        .await,
        2
    );

    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn without_a_command_service_the_error_says_what_to_start() {
    let nats = TestNats::start().await.unwrap();
    let mut config = config(&nats.url, "postgres://unused", 2);
    config.phases.raw = false;
    let error = flexcore_dev::bench::run(&config).await.unwrap_err();
    assert_eq!(error.to_string(), NO_SERVICE);
}
