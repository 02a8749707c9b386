//! A private `nats-server` with JetStream per test.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context as _};
use flexcore_security::kit::{Kit, IDENTITIES_FILE, STANDARD};
use flexcore_security::{Credentials, Identity, Role, Trust};
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

/// Name of the test harness's identity: role `admin` in the identities file, but logged in
/// to NATS without permission limits, so a test can inspect, forge and clean up anything.
pub const HARNESS: &str = "harness";

/// A private `nats-server` with JetStream on `127.0.0.1` and a random port, its store
/// in a temporary directory. Killed when dropped.
///
/// Authentication is on, as in every FlexCore deployment: the server knows the identities
/// of [`STANDARD`] (one per service role, `flexctl` and `app`) with their roles'
/// permissions, and [`HARNESS`]; anonymous clients are refused. [`Self::settings_for`]
/// gives a service its identity.
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
    /// The identities the server knows.
    kit: Kit,
    // Last field: removed only after the server is gone.
    dir: tempfile::TempDir,
}

impl TestNats {
    /// Starts a server, waits (at most 10 s) until it accepts connections, and creates the
    /// system's streams as the `setup` identity does (`flexcore-command setup`, default
    /// settings).
    pub async fn start() -> anyhow::Result<Self> {
        let nats = Self::start_bare().await?;
        nats.set_up_streams().await?;
        Ok(nats)
    }

    /// Creates (or updates) the system's streams and plugin bucket with default settings,
    /// connected as the `setup` identity, so with exactly its permissions.
    pub async fn set_up_streams(&self) -> anyhow::Result<()> {
        let client = self.client_as("setup").await?;
        flexcore_eventstore::streams::setup(
            &async_nats::jetstream::new(client.clone()),
            &flexcore_eventstore::streams::StreamSettings::default(),
        )
        .await
        .context("setting up the streams as the setup identity")?;
        client.flush().await?;
        Ok(())
    }

    /// [`Self::start`] without creating any stream: what a deployment looks like before
    /// setup has run.
    pub async fn start_bare() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("flexcore-nats-")
            .tempdir()
            .context("creating the nats-server directory")?;
        let kit = kit().clone();
        kit.write(&dir.path().join("identities"))
            .context("writing the test identities")?;
        let mut nats = Self {
            url: String::new(),
            port: 0,
            server_name: format!("flexcore-test-{}", uuid::Uuid::new_v4().simple()),
            binary: find_binary()?,
            max_payload: MAX_PAYLOAD.to_owned(),
            child: Mutex::new(None),
            kit,
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

    /// A new client connected to this server as [`HARNESS`] (no permission limits).
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        self.client_as(HARNESS).await
    }

    /// A new client connected as identity `name` (one of [`STANDARD`] or [`HARNESS`]),
    /// with its inbox prefix, so it has exactly that identity's permissions.
    pub async fn client_as(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        login_as(&self.kit, name)?
            .connect(&self.url)
            .await
            .with_context(|| format!("connecting to the test nats-server at {} as {name}", self.url))
    }

    /// The identities file the server's users come from.
    pub fn identities_file(&self) -> PathBuf {
        self.dir.path().join("identities").join(IDENTITIES_FILE)
    }

    /// The seed file of identity `name`.
    pub fn seed_file(&self, name: &str) -> PathBuf {
        self.dir.path().join("identities").join(format!("{name}.nk"))
    }

    /// The trust of the identities file.
    pub fn trust(&self) -> anyhow::Result<Trust> {
        Ok(Trust::load(&self.identities_file())?)
    }

    /// The identity `name` with the identities file, as a service loads them.
    pub fn credentials(&self, name: &str) -> anyhow::Result<Credentials> {
        let trust = Trust::load(&self.identities_file())?;
        let seed = self
            .kit
            .seed(name)
            .with_context(|| format!("no test identity {name:?}"))?;
        Ok(Credentials {
            identity: Identity::from_seed(seed, &trust)?,
            trust,
        })
    }

    /// The identity `name`.
    pub fn identity(&self, name: &str) -> anyhow::Result<Identity> {
        Ok(self.credentials(name)?.identity)
    }

    /// The identity a test sends a command on `subject` as ([`signer_for`]).
    pub fn signer_for(&self, subject: &str) -> anyhow::Result<Identity> {
        signer_for(subject)
    }

    /// A request to `subject` on `client`, a command signed as [`signer_for`] says.
    pub async fn signed_request(
        &self,
        client: &async_nats::Client,
        subject: &str,
        body: impl Into<bytes::Bytes>,
    ) -> anyhow::Result<async_nats::Message> {
        signed_request(client, subject, body).await
    }

    /// `settings` pointed at this server as identity `name` (URL, seed file, identities
    /// file).
    pub fn settings_for(&self, name: &str, settings: &mut flexcore_config::Settings) {
        settings.nats.url = self.url.clone();
        settings.nats.nkey_seed_file = self.seed_file(name).display().to_string();
        settings.security.identities_file = self.identities_file().display().to_string();
    }

    /// The `FLEXCORE__…` variables that point a service process at this server as
    /// identity `name`.
    pub fn env_for(&self, name: &str) -> Vec<(String, String)> {
        vec![
            ("FLEXCORE__NATS__URL".to_owned(), self.url.clone()),
            (
                "FLEXCORE__NATS__NKEY_SEED_FILE".to_owned(),
                self.seed_file(name).display().to_string(),
            ),
            (
                "FLEXCORE__SECURITY__IDENTITIES_FILE".to_owned(),
                self.identities_file().display().to_string(),
            ),
        ]
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
        if !terminate(&mut child) {
            tracing::warn!(port = self.port, "nats-server did not stop on SIGTERM; killed it");
        }
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
             jetstream {{\n  store_dir: {store:?}\n  max_memory_store: 256MB\n  max_file_store: 4GB\n}}\n\
             {accounts}",
            name = self.server_name,
            port = self.port,
            max_payload = self.max_payload,
            store = self.dir.path().display().to_string(),
            accounts = self.kit.accounts_block(),
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

/// The scheduler replicas with identities of their own: `scheduler-a`, `-b`, `-c`.
pub const SCHEDULER_REPLICAS: [&str; 3] = ["a", "b", "c"];

/// The identities of every test server of this process: one set, so process-wide state
/// (flexctl's access, a service's settings) is right whichever server a test uses.
pub fn kit() -> &'static Kit {
    static KIT: std::sync::OnceLock<Kit> = std::sync::OnceLock::new();
    KIT.get_or_init(|| {
        let mut kit = Kit::generate(&STANDARD);
        kit.add(HARNESS, Role::Admin, true);
        // Replicas with identities of their own (then the actor says which one acted).
        for replica in SCHEDULER_REPLICAS {
            kit.add(&format!("scheduler-{replica}"), Role::Scheduler, false);
        }
        kit
    })
}

/// A directory holding [`kit`] as `flexctl security init` writes one (identities file,
/// accounts block, one seed file per identity), for the whole process:
/// `<temp>/flexcore-test-identities-<pid>`. Statics are never dropped, so each process
/// first removes the directories of test processes that are gone.
pub fn kit_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        const PREFIX: &str = "flexcore-test-identities-";
        let temp = std::env::temp_dir();
        for entry in std::fs::read_dir(&temp).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let pid = name.to_str().and_then(|n| n.strip_prefix(PREFIX));
            if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = temp.join(format!("{PREFIX}{}", std::process::id()));
        // Errors surface where the files are used (a missing seed file names its path).
        let _ = kit().write(&dir);
        dir
    })
}

/// Identity `name` of [`kit`] (the same on every test server of this process).
pub fn test_identity(name: &str) -> anyhow::Result<Identity> {
    let kit = kit();
    let seed = kit.seed(name).with_context(|| format!("no test identity {name:?}"))?;
    Ok(Identity::from_seed(seed, &kit.trust()?)?)
}

/// The identity a test sends a command on `subject` as: `runner` for the runners'
/// commands, `scheduler` for the schedulers' (and `run.request`, which it may send for a
/// slot or not), else [`HARNESS`] (role admin).
pub fn signer_for(subject: &str) -> anyhow::Result<Identity> {
    let command = subject.strip_prefix("flexcore.cmd.").unwrap_or_default();
    let name = match command {
        "run.claim" | "run.checkpoint" | "run.succeed" | "run.fail" => "runner",
        "run.request" | "run.retry" | "run.time_out" | "schedule.skip_slot" | "schedule.miss_slots" => "scheduler",
        _ => HARNESS,
    };
    test_identity(name)
}

/// A request to `subject` on `client` (of any test server of this process); a command is
/// signed as [`signer_for`] says.
pub async fn signed_request(
    client: &async_nats::Client,
    subject: &str,
    body: impl Into<bytes::Bytes>,
) -> anyhow::Result<async_nats::Message> {
    let body = body.into();
    let mut headers = async_nats::HeaderMap::new();
    if subject.starts_with("flexcore.cmd.") {
        signer_for(subject)?.sign(subject, &mut headers, &body);
    }
    Ok(client.request_with_headers(subject.to_owned(), headers, body).await?)
}

/// Waits (at most 30 s) until a command service answers on `client`'s server: a
/// command it refuses is an answer, "no responders" is not (the service waits for its
/// streams and migrations before it subscribes).
pub async fn commands_answered(client: &async_nats::Client) -> anyhow::Result<()> {
    crate::wait_until(Duration::from_secs(30), "the command service answers", || async {
        matches!(
            tokio::time::timeout(
                Duration::from_millis(500),
                signed_request(client, "flexcore.cmd.plugin.enable", "{}")
            )
            .await,
            Ok(Ok(_))
        )
    })
    .await
}

/// `settings` (already pointed at a test server) switched to identity `name`.
pub fn settings_as(name: &str, settings: &mut flexcore_config::Settings) {
    settings.nats.nkey_seed = flexcore_config::Secret::new(kit().seed(name).unwrap_or_default());
}

/// The trust of [`kit`].
pub fn test_trust() -> anyhow::Result<Trust> {
    Ok(kit().trust()?)
}

/// Variable naming the `nats-server` binary tests start (CI runs the JetStream tests once
/// with Debian's 2.9 and once with a current 2.x this way).
pub const BINARY_VAR: &str = "FLEXCORE_TEST_NATS_SERVER";

/// `$FLEXCORE_TEST_NATS_SERVER`, else `nats-server` on `PATH`, else [`FALLBACK_BINARY`].
pub(crate) fn find_binary() -> anyhow::Result<PathBuf> {
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
pub(crate) async fn is_our_server(addr: SocketAddr, server_name: &str) -> bool {
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

/// Stops a nats-server process gracefully: SIGTERM (JetStream flushes its store), then up
/// to [`STOP_TIMEOUT`] for it to exit; if it does not (or cannot be signalled), SIGKILL.
/// False when it had to be killed.
pub(crate) fn terminate(child: &mut Child) -> bool {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return true;
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
                return true;
            }
            std::thread::sleep(POLL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Connect options logging in as test identity `name` of `kit` (its NKey and its inbox
/// prefix, so the client has exactly that identity's permissions).
pub(crate) fn login_as(kit: &Kit, name: &str) -> anyhow::Result<async_nats::ConnectOptions> {
    let seed = kit.seed(name).with_context(|| format!("no test identity {name:?}"))?;
    Ok(async_nats::ConnectOptions::with_nkey(seed.to_owned())
        .custom_inbox_prefix(flexcore_security::identity::inbox_prefix(name))
        .connection_timeout(Duration::from_secs(5)))
}
