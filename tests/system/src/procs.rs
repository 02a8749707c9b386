//! The service binaries as child processes, for tests that kill or signal them. They are
//! the workspace's own builds (`target/debug/flexcore-*`, next to the test binary's
//! directory): `cargo nextest run --workspace` builds them; alone, run
//! `cargo build --workspace --bins` first.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The four service binaries and the log line each writes once it serves.
pub const SERVICES: [(&str, &str); 4] = [
    ("flexcore-command", "serving commands"),
    ("flexcore-projection", "serving queries"),
    ("flexcore-scheduler", "scheduler started"),
    ("flexcore-runner", "taking run work"),
];

/// The test server's identity a service binary runs as (`flexcore-command` → `command`).
pub fn identity_of(binary: &str) -> &'static str {
    match binary {
        "flexcore-command" => "command",
        "flexcore-projection" => "projection",
        "flexcore-scheduler" => "scheduler",
        "flexcore-runner" => "runner",
        _ => "app",
    }
}

/// The path of service binary `name`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/<test> → target/debug/<name>
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build --workspace --bins`",
        path.display()
    );
    path
}

/// A running service binary, its output in a log file. Killed when dropped.
#[derive(Debug)]
pub struct ServiceProcess {
    /// The binary's name.
    pub name: String,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    child: Child,
}

impl ServiceProcess {
    /// [`Self::start`] on the test server `nats`, as the binary's identity there.
    pub fn start_on(nats: &flexcore_testkit::TestNats, name: &str, env: &[(&str, String)], logs: &Path) -> Self {
        let own = nats.env_for(identity_of(name));
        let env: Vec<(&str, String)> = env
            .iter()
            .cloned()
            .chain(own.iter().map(|(k, v)| (k.as_str(), v.clone())))
            .collect();
        Self::start(name, &env, logs)
    }

    /// Starts binary `name` with the workspace's `config/` and `env` (e.g.
    /// `FLEXCORE__NATS__URL`), logging JSON lines to `<logs>/<name>-<n>.log`.
    pub fn start(name: &str, env: &[(&str, String)], logs: &Path) -> Self {
        let mut n = 0;
        let log = loop {
            let candidate = logs.join(format!("{name}-{n}.log"));
            if !candidate.exists() {
                break candidate;
            }
            n += 1;
        };
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(binary(name));
        command
            .env("FLEXCORE_CONFIG_DIR", crate::plugins::workspace().join("config"))
            .env("FLEXCORE__TELEMETRY__LOG_FORMAT", "json")
            .env_remove("RUST_LOG")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        Self {
            name: name.to_owned(),
            log,
            child: command.spawn().unwrap(),
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (at most `within`) until its log contains `marker`; fails the test if it exits
    /// or the time runs out.
    pub async fn wait_logged(&mut self, marker: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let text = self.log_text();
            if text.contains(marker) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}) before logging {marker:?}:\n{text}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{} never logged {marker:?}:\n{text}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal(rustix::process::Signal::TERM);
    }

    /// SIGKILL: gone at once, nothing flushed.
    pub fn kill9(&mut self) {
        self.signal(rustix::process::Signal::KILL);
        let _ = self.child.wait();
    }

    fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// Waits (at most `within`) for it to exit; true when it did.
    pub async fn exited_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
