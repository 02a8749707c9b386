//! `flexctl dev` as a process supervisor: flexctl becomes flexcore-dev (one process, so
//! a signal reaches the supervisor), a service that is killed is started again, and
//! SIGTERM stops every child, nats-server included. Needs `cargo build --bins` (the
//! service binaries and flexcore-dev next to flexctl).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use flexcore_testkit::TestDb;
use rustix::process::{kill_process, Pid, Signal};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The name of the program process `pid` runs, if it is alive (not a zombie).
fn program(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(") ")?.1.chars().next()?;
    if state == 'Z' || state == 'X' {
        return None;
    }
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    Some(exe.file_name()?.to_string_lossy().into_owned())
}

/// The live children of `parent`: (pid, program).
fn children(parent: i32) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(parent) {
            if let Some(name) = program(pid) {
                found.push((pid, name));
            }
        }
    }
    found
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    flexcore_testkit::wait_until(timeout, what, || std::future::ready(check()))
        .await
        .unwrap();
}

const PROCESSES: [&str; 6] = [
    "nats-server",
    "flexcore-command",
    "flexcore-projection",
    "flexcore-scheduler",
    "flexcore-runner",
    "flexcore-gateway",
];

/// A `flexctl dev --no-demo` of its own (a nats-server it starts, an empty database, a
/// state directory), up: the process, its pid and its log.
async fn start_dev(db: &TestDb, state: &Path, extra: &[&str]) -> (std::process::Child, i32, PathBuf) {
    let nats_url = format!("nats://127.0.0.1:{}", flexcore_testkit::unused_port().unwrap());
    let http_port = flexcore_testkit::unused_port().unwrap().to_string();
    let log = state.join("dev.log");
    let file = std::fs::File::create(&log).unwrap();
    let stack = Command::new(env!("CARGO_BIN_EXE_flexctl"))
        .args(["--nats-url", &nats_url, "dev", "--no-demo", "--database-url", &db.url])
        .args(["--state-dir", state.to_str().unwrap()])
        .args(["--admin-port", "0", "--http-port", &http_port])
        .args(extra)
        .env("FLEXCORE_CONFIG_DIR", workspace().join("config"))
        .env_remove("FLEXCORE__NATS__URL")
        .current_dir(workspace())
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let pid = i32::try_from(stack.id()).unwrap();
    wait_for("flexctl dev to be up", Duration::from_secs(180), || {
        let text = log_text(&log);
        assert!(
            !text.contains("Error:") && !text.contains("error:"),
            "flexctl dev failed:\n{text}"
        );
        text.contains("try next")
    })
    .await;
    (stack, pid, log)
}

/// Sends `signal` to `flexctl dev`, which must stop every child and exit cleanly.
async fn stop_with(mut stack: std::process::Child, pid: i32, log: &Path, signal: Signal, name: &str) {
    let running = children(pid);
    assert!(running.len() >= PROCESSES.len(), "{running:?}");
    kill_process(Pid::from_raw(pid).unwrap(), signal).unwrap();
    let status = tokio::task::spawn_blocking(move || stack.wait())
        .await
        .unwrap()
        .unwrap();
    let text = log_text(log);
    assert!(status.success(), "flexctl dev exited {status}:\n{text}");
    assert!(text.contains(&format!("{name}: stopping")), "{text}");
    wait_for("every child to be gone", Duration::from_secs(10), || {
        running.iter().all(|(p, _)| program(*p).is_none())
    })
    .await;
}

#[tokio::test]
async fn flexctl_dev_restarts_a_killed_service_and_sigterm_stops_every_child() {
    flexcore_testkit::init_tracing();
    let db = TestDb::create_empty().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let (mut stack, pid, log) = start_dev(&db, state.path(), &[]).await;

    // One process: flexctl became flexcore-dev, which started every child itself.
    assert_eq!(program(pid).as_deref(), Some("flexcore-dev"));
    let before = children(pid);
    for name in PROCESSES {
        assert!(before.iter().any(|(_, n)| n == name), "no {name} among {before:?}");
    }

    // A killed service is started again; the rest of the stack stays.
    let (scheduler, _) = before.iter().find(|(_, n)| n == "flexcore-scheduler").unwrap().clone();
    kill_process(Pid::from_raw(scheduler).unwrap(), Signal::KILL).unwrap();
    wait_for("the scheduler to be restarted", Duration::from_secs(60), || {
        log_text(&log).contains("restarted flexcore-scheduler")
            && children(pid)
                .iter()
                .any(|(p, n)| n == "flexcore-scheduler" && *p != scheduler)
    })
    .await;
    let text = log_text(&log);
    assert!(text.contains("flexcore-scheduler exited"), "{text}");
    assert!(text.contains("restarted flexcore-scheduler"), "{text}");
    assert!(stack.try_wait().unwrap().is_none(), "flexctl dev stopped:\n{text}");
    let (nats, _) = before.iter().find(|(_, n)| n == "nats-server").unwrap().clone();
    assert_eq!(program(nats).as_deref(), Some("nats-server"), "NATS was left alone");

    // SIGTERM stops everything, as Ctrl-C does.
    stop_with(stack, pid, &log, Signal::TERM, "SIGTERM").await;
}

#[tokio::test]
async fn sighup_stops_flexctl_dev_and_every_child() {
    flexcore_testkit::init_tracing();
    let db = TestDb::create_empty().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let (stack, pid, log) = start_dev(&db, state.path(), &[]).await;
    stop_with(stack, pid, &log, Signal::HUP, "SIGHUP").await;
}

/// A service that keeps crashing right after each restart is given up on after five fast
/// exits in a row: flexctl dev says so, stops every child and fails.
#[tokio::test]
async fn a_service_that_keeps_crashing_is_given_up_on_and_the_stack_stops() {
    use std::os::unix::fs::PermissionsExt as _;
    flexcore_testkit::init_tracing();
    let db = TestDb::create_empty().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    // The real binaries, but a scheduler that runs once and crashes at every restart.
    let bin = tempfile::tempdir().unwrap();
    let real = PathBuf::from(env!("CARGO_BIN_EXE_flexctl"))
        .parent()
        .unwrap()
        .to_owned();
    for name in PROCESSES
        .iter()
        .filter(|n| n.starts_with("flexcore-") && **n != "flexcore-scheduler")
    {
        std::os::unix::fs::symlink(real.join(name), bin.path().join(name)).unwrap();
    }
    let script = bin.path().join("flexcore-scheduler");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ ! -e \"$0.started\" ]; then touch \"$0.started\"; exec {} \"$@\"; fi\n\
             echo 'crashing on purpose' >&2\nexit 3\n",
            real.join("flexcore-scheduler").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let bin_dir = bin.path().to_str().unwrap().to_owned();
    let (mut stack, pid, log) = start_dev(&db, state.path(), &["--bin-dir", &bin_dir]).await;
    let running = children(pid);
    let (scheduler, _) = running.iter().find(|(_, n)| n == "flexcore-scheduler").unwrap().clone();
    kill_process(Pid::from_raw(scheduler).unwrap(), Signal::KILL).unwrap();
    // Back-off 1-2, 4, 8, 16 s: about 30 s before it gives up.
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = stack.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = stack.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    let text = log_text(&log);
    let status = status.unwrap_or_else(|| panic!("flexctl dev did not give up:\n{text}"));
    assert!(!status.success(), "{text}");
    assert!(text.contains("crashing on purpose"), "{text}");
    assert!(
        text.contains("flexcore-scheduler exited 5 times in a row within 10 s of starting"),
        "{text}"
    );
    assert!(text.contains("giving up on it and stopping the stack"), "{text}");
    wait_for("every child to be gone", Duration::from_secs(10), || {
        running.iter().all(|(p, _)| program(*p).is_none())
    })
    .await;
}
