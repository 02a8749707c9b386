//! Every service binary stops on SIGTERM within its shutdown grace, whatever state NATS
//! and Postgres are in: running, NATS down, Postgres down, both down. (A service that kept
//! reconnecting after SIGTERM ran on for 33 minutes once.)

use std::time::Duration;

use flexcore_system_tests::procs::{ServiceProcess, SERVICES};
use flexcore_testkit::{TestNats, TestPostgres};

/// The grace every service gets here.
const GRACE: Duration = Duration::from_secs(3);
/// Room on top of the grace for the process to be reaped.
const SLACK: Duration = Duration::from_secs(2);

async fn scenario(nats_down: bool, postgres_down: bool) {
    let mut nats = TestNats::start().await.unwrap();
    let pg = TestPostgres::start().await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    let grace_ms = GRACE.as_millis().to_string();
    let env = [
        ("FLEXCORE__DATABASE__URL", pg.url()),
        ("FLEXCORE__NATS__URL", nats.url.clone()),
        ("FLEXCORE__COMMAND__SHUTDOWN_GRACE_MS", grace_ms.clone()),
        ("FLEXCORE__PROJECTION__SHUTDOWN_GRACE_MS", grace_ms.clone()),
        ("FLEXCORE__SCHEDULER__SHUTDOWN_GRACE_MS", grace_ms.clone()),
        ("FLEXCORE__RUNNER__SHUTDOWN_GRACE_MS", grace_ms),
        ("FLEXCORE__RUNNER__RUNNER_ID", "shutdown-test".to_owned()),
    ];
    let mut running = Vec::new();
    for (name, ready) in SERVICES {
        let mut service = ServiceProcess::start_on(&nats, name, &env, logs.path());
        // Each serves once it found the streams setup created (TestNats::start).
        service.wait_logged(ready, Duration::from_secs(60)).await;
        running.push(service);
    }
    if nats_down {
        nats.stop();
    }
    if postgres_down {
        pg.stop().await.unwrap();
    }
    // Let them notice: reconnect loops, failing queries.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for service in &running {
        service.terminate();
    }
    for service in &mut running {
        let stopped = service.exited_within(GRACE + SLACK).await;
        let log = service.log_text();
        assert!(
            stopped,
            "{} (nats down: {nats_down}, postgres down: {postgres_down}) still ran {:?} after SIGTERM:\n{}",
            service.name,
            GRACE + SLACK,
            log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
        // Either it drained and said so, or the grace ran out and it said what it gave up.
        let clean = format!("{} stopped", service.name);
        assert!(
            log.contains(&clean) || (log.contains("exiting now") && log.contains("abandoned")),
            "{} (nats down: {nats_down}, postgres down: {postgres_down}) stopped without saying how:\n{}",
            service.name,
            log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_stops_within_its_grace_with_everything_up() {
    scenario(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_stops_within_its_grace_with_nats_down() {
    scenario(true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_stops_within_its_grace_with_postgres_down() {
    scenario(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_stops_within_its_grace_with_nats_and_postgres_down() {
    scenario(true, true).await;
}
