//! Every service binary stops on SIGTERM within its shutdown grace, whatever state NATS
//! and Postgres are in: running, NATS down, Postgres down, both down. (A service that kept
//! reconnecting after SIGTERM ran on for 33 minutes once.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flexcore_testkit::{TestNats, TestPostgres};

const SERVICES: [(&str, &str); 4] = [
    ("flexcore-command", "serving commands"),
    ("flexcore-projection", "serving queries"),
    ("flexcore-scheduler", "scheduler started"),
    ("flexcore-runner", "taking run work"),
];
/// The grace every service gets here.
const GRACE: Duration = Duration::from_secs(3);
/// Room on top of the grace for the process to be reaped.
const SLACK: Duration = Duration::from_secs(2);

fn binary(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_flexctl")).parent().unwrap().to_owned();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built (cargo build --workspace --bins)",
        path.display()
    );
    path
}

struct Running {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

fn start(name: &'static str, nats: &TestNats, pg: &TestPostgres, logs: &Path) -> Running {
    let log = logs.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let grace_ms = GRACE.as_millis().to_string();
    let child = Command::new(binary(name))
        .env(
            "FLEXCORE_CONFIG_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config"),
        )
        .env("FLEXCORE__DATABASE__URL", pg.url())
        .env("FLEXCORE__NATS__URL", &nats.url)
        .env("FLEXCORE__TELEMETRY__LOG_FORMAT", "json")
        .env("FLEXCORE__COMMAND__SHUTDOWN_GRACE_MS", &grace_ms)
        .env("FLEXCORE__PROJECTION__SHUTDOWN_GRACE_MS", &grace_ms)
        .env("FLEXCORE__SCHEDULER__SHUTDOWN_GRACE_MS", &grace_ms)
        .env("FLEXCORE__RUNNER__SHUTDOWN_GRACE_MS", &grace_ms)
        .env("FLEXCORE__RUNNER__RUNNER_ID", "shutdown-test")
        .env_remove("RUST_LOG")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Running { name, child, log }
}

async fn wait_logged(running: &mut Running, marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&running.log).unwrap_or_default();
        if text.contains(marker) {
            return;
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            panic!("{} exited during start-up ({status}):\n{text}", running.name);
        }
        assert!(
            Instant::now() < deadline,
            "{} never logged {marker:?}:\n{text}",
            running.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn terminate(running: &Running) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(running.child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
}

/// Waits for the exit; how long it took (`None`: still running after grace + slack, then
/// killed).
async fn exited(running: &mut Running) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < GRACE + SLACK {
        if let Ok(Some(_)) = running.child.try_wait() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = running.child.kill();
    let _ = running.child.wait();
    None
}

async fn scenario(nats_down: bool, postgres_down: bool) {
    let mut nats = TestNats::start().await.unwrap();
    let pg = TestPostgres::start().await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut running = Vec::new();
    for (name, ready) in SERVICES {
        let mut service = start(name, &nats, &pg, logs.path());
        // The command service creates the streams the others wait for.
        wait_logged(&mut service, ready).await;
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
        terminate(service);
    }
    for service in &mut running {
        let took = exited(service).await;
        let log = std::fs::read_to_string(&service.log).unwrap_or_default();
        assert!(
            took.is_some(),
            "{} (nats down: {nats_down}, postgres down: {postgres_down}) still ran {:?} after SIGTERM:\n{}",
            service.name,
            GRACE + SLACK,
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
