//! A private `nats-server` with JetStream per test.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::time::Instant;

/// Largest message the server accepts: above the services' own limits, so tests can
/// send oversized payloads and see the service (not the server) reject them.
pub const MAX_PAYLOAD: &str = "8MB";
/// Where `nats-server` is looked for when it is not on `PATH`.
pub const FALLBACK_BINARY: &str = "/usr/sbin/nats-server";

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Polling interval while waiting for the process.
const POLL: Duration = Duration::from_millis(20);
/// Fresh ports tried by [`TestNats::start`] when one is taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// A private `nats-server` with JetStream on `127.0.0.1` and a random port, its store
/// in a temporary directory. Killed when dropped.
#[derive(Debug)]
pub struct TestNats {
    /// Client URL, `nats://127.0.0.1:<port>`.
    pub url: String,
    port: u16,
    /// Unique, so readiness checks cannot mistake another server on the port for ours.
    server_name: String,
    binary: PathBuf,
    /// The `max_payload` of the next start ([`MAX_PAYLOAD`] unless set).
    max_payload: String,
    child: Mutex<Option<Child>>,
    // Last field: removed only after the server is gone.
    dir: tempfile::TempDir,
}

impl TestNats {
    /// Starts a server and waits (at most 10 s) until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("flexcore-nats-")
            .tempdir()
            .context("creating the nats-server directory")?;
        let mut nats = Self {
            url: String::new(),
            port: 0,
            server_name: format!("flexcore-test-{}", uuid::Uuid::new_v4().simple()),
            binary: find_binary()?,
            max_payload: MAX_PAYLOAD.to_owned(),
            child: Mutex::new(None),
            dir,
        };
        let mut attempt = 1;
        loop {
            nats.port = crate::unused_port()?;
            nats.url = format!("nats://127.0.0.1:{}", nats.port);
            match nats.launch().await {
                Ok(()) => return Ok(nats),
                // Another process may have taken the port since it was probed.
                Err(_) if attempt < PORT_ATTEMPTS && nats.port_was_taken() => {
                    nats.kill();
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// A new client connected to this server.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(&self.url)
            .await
            .with_context(|| format!("connecting to the test nats-server at {}", self.url))
    }

    /// A JetStream context on a new client.
    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(self.client().await?))
    }

    /// The TCP port, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory, the same across restarts.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    /// The server's log (stdout and stderr of every run).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// Whether the server process is alive.
    pub fn is_running(&self) -> bool {
        match self.lock_child().as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the server gracefully (SIGTERM, so JetStream flushes its store) and waits
    /// for it to exit; kills it if it has not within 10 s. Does nothing if stopped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.lock_child().take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        let terminated = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if terminated {
            let deadline = std::time::Instant::now() + STOP_TIMEOUT;
            while std::time::Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(POLL);
            }
            tracing::warn!(port = self.port, "nats-server ignored SIGTERM; killing it");
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the server if it runs, then starts it again on the same port with the
    /// same store, so persisted streams and messages survive. Connected clients
    /// reconnect on their own.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch().await
    }

    /// Spawns the server with a fresh config file and waits until it is ready.
    async fn launch(&self) -> anyhow::Result<()> {
        let config = self.dir.path().join("nats-server.conf");
        std::fs::write(&config, self.config_text()).with_context(|| format!("writing {}", config.display()))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        let mut marker = log.try_clone()?;
        let _ = writeln!(marker, "--- flexcore testkit: starting on port {} ---", self.port);
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        *self.lock_child() = Some(child);
        self.wait_ready().await
    }

    fn config_text(&self) -> String {
        format!(
            "# Generated by flexcore-testkit.\n\
             server_name: {name:?}\n\
             listen: \"127.0.0.1:{port}\"\n\
             max_payload: {max_payload}\n\
             jetstream {{\n  store_dir: {store:?}\n  max_memory_store: 256MB\n  max_file_store: 4GB\n}}\n",
            name = self.server_name,
            port = self.port,
            max_payload = self.max_payload,
            store = self.dir.path().display().to_string(),
        )
    }

    /// Polls until the port answers with our server's `INFO` line, the process dies, or
    /// the deadline passes.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(status) = self.exit_status() {
                bail!(
                    "nats-server exited during start-up ({status}); log tail:\n{}",
                    self.log_tail()
                );
            }
            if is_our_server(addr, &self.server_name).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "nats-server not accepting connections on {addr} after {START_TIMEOUT:?}; log tail:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn exit_status(&self) -> Option<std::process::ExitStatus> {
        match self.lock_child().as_mut() {
            Some(child) => child.try_wait().ok().flatten(),
            None => None,
        }
    }

    /// The last lines of the server log.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn port_was_taken(&self) -> bool {
        self.log_tail().contains("address already in use")
    }

    /// Sets the server's `max_payload` (e.g. `"64KB"`) from its next (re)start on.
    pub fn set_max_payload(&mut self, max_payload: &str) {
        max_payload.clone_into(&mut self.max_payload);
    }

    /// Kills the server like a crash (SIGKILL: nothing flushed); [`Self::restart`] starts
    /// it again on the same port and store.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.lock_child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Variable naming the `nats-server` binary tests start (CI runs the JetStream tests once
/// with Debian's 2.9 and once with a current 2.x this way).
pub const BINARY_VAR: &str = "FLEXCORE_TEST_NATS_SERVER";

/// `$FLEXCORE_TEST_NATS_SERVER`, else `nats-server` on `PATH`, else [`FALLBACK_BINARY`].
fn find_binary() -> anyhow::Result<PathBuf> {
    if let Some(binary) = std::env::var_os(BINARY_VAR).filter(|b| !b.is_empty()) {
        let binary = PathBuf::from(binary);
        if !binary.is_file() {
            bail!("{BINARY_VAR}={} is not a file", binary.display());
        }
        return Ok(binary);
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("nats-server"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_default();
    match on_path {
        Some(binary) => Ok(binary),
        None if Path::new(FALLBACK_BINARY).is_file() => Ok(PathBuf::from(FALLBACK_BINARY)),
        None => bail!(
            "nats-server not found on PATH nor at {FALLBACK_BINARY}; install it \
             (e.g. `apt-get install nats-server`) to run tests that need NATS"
        ),
    }
}

/// Whether `addr` accepts a connection and greets with the `INFO` line of the server
/// named `server_name` (a stranger that grabbed the port does not pass for ours).
async fn is_our_server(addr: SocketAddr, server_name: &str) -> bool {
    let expected = format!("\"server_name\":\"{server_name}\"");
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut info = String::new();
        BufReader::new(stream.take(64 * 1024)).read_line(&mut info).await.ok()?;
        Some(info.starts_with("INFO ") && info.contains(&expected))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(true))
    )
}
