//! `flexctl bench cold-start`: how long each service takes from its start to a `200` from
//! its `/health/ready` with a long event log.
//!
//! The bench runs the services itself (the binaries of `--bin-dir`, on the database and
//! NATS server given, logged in with the seeds of `--keys-dir`), one at a time:
//!
//! 1. `flexcore-command` starts (migrations, streams); 64 bench pipelines are created and
//!    paused and resumed once through commands, so the log holds real toggles of each.
//!    Then `--schedules` schedules (10,000 by default) over those pipelines, firing once a
//!    year: what the scheduler keeps in memory and its snapshot carries.
//! 2. Seeding, until the log holds `--events` events: set-based `INSERT … SELECT` over
//!    `generate_series`, a million rows per statement, of further pause/resume toggles of
//!    those pipelines, copying the type, schema version, data and metadata of their real
//!    toggles and continuing their versions — valid events every reader folds, as the
//!    command service would have written them (each toggle flips the pipeline's status).
//! 3. The relay of that `flexcore-command` publishes them to `FLEXCORE_EVENTS` (signed);
//!    the bench waits until the relay checkpoint reaches the end of the log, so the stream
//!    holds exactly the log. Then, when its cold start is to be timed, `flexcore-projection`
//!    starts and catches up (timed, but not a cold start: a first catch-up); likewise
//!    `flexcore-scheduler` replays the whole log once and writes its snapshot (timed);
//!    then they stop.
//! 4. Measured: each service in turn (command, projection, scheduler, runner) starts alone
//!    and the bench polls its `/health/ready` every 10 ms until it answers `200`; the
//!    time from spawn to that answer is the service's cold start. The service is stopped
//!    (SIGTERM) before the next one starts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use flexcore_client::Client;
use flexcore_contracts::commands::CreateSchedule;
use flexcore_contracts::model::OverlapPolicy;
use futures::future::{join_all, try_join_all};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::ConnectOptions as _;
use tokio::process::{Child, Command};
use uuid::Uuid;

use flexctl::nats::Nats;

use super::commands::{connect, send, Outcome, Toggle, CLIENTS_PER_CONNECTION};
use super::setup;

/// Pipelines whose toggles fill the log.
const PIPELINES: usize = 64;
/// Rows per seeding statement (one transaction each).
const SEED_CHUNK: u64 = 1_000_000;
/// How long a service may take to become ready before the bench gives up on it.
const READY_WITHIN: Duration = Duration::from_secs(1800);
/// Interval of readiness polls.
const POLL: Duration = Duration::from_millis(10);

/// What to run, and where.
#[derive(Debug, Clone)]
pub struct ColdStartBench {
    /// NATS server, and flexctl's login there.
    pub nats: Nats,
    /// The stack's database.
    pub database_url: String,
    /// Events the log should hold.
    pub events: u64,
    /// Schedules created before seeding (the scheduler's state and snapshot).
    pub schedules: usize,
    /// Directory of the service binaries.
    pub bin_dir: PathBuf,
    /// Directory of the services' seeds (`<identity>.nk`) and `identities.json`; `None`
    /// for a NATS server without accounts.
    pub keys_dir: Option<PathBuf>,
    /// Admin port the services are started with.
    pub admin_port: u16,
    /// Services measured, in order (binary names).
    pub services: Vec<String>,
}

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct ColdStartFigures {
    /// Events in the log when the services were started.
    pub events_in_log: u64,
    /// Events this run inserted.
    pub seeded: u64,
    /// Seconds the inserts took.
    pub seed_seconds: f64,
    /// Seconds from the end of seeding until the relay had published the whole log.
    pub relay_seconds: f64,
    /// Seconds the projection service needed for its first catch-up (not a cold start).
    pub projection_catch_up_seconds: f64,
    /// Seconds the scheduler needed to replay the whole log and write its first snapshot
    /// (not a cold start: the one after it starts from that snapshot).
    pub scheduler_first_replay_seconds: f64,
    /// The size of that snapshot (compressed), in bytes.
    pub scheduler_snapshot_bytes: u64,
    /// Each service's cold start.
    pub services: Vec<ServiceStart>,
}

/// One service's cold start.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStart {
    /// Binary name.
    pub service: String,
    /// Milliseconds from spawn to the first `200` of `/health/ready`.
    pub ready_ms: f64,
    /// CPU seconds (user + system) the process used until then.
    pub cpu_seconds: f64,
    /// Its resident memory then, in MiB.
    pub rss_mib: f64,
}

impl ColdStartFigures {
    /// Human-readable lines.
    pub fn text(&self) -> String {
        let mut out = format!(
            "log: {} events ({} seeded in {:.1} s; relayed {:.1} s later; projection's first catch-up {:.1} s; scheduler's first replay and snapshot {:.1} s, {} bytes)\n",
            self.events_in_log,
            self.seeded,
            self.seed_seconds,
            self.relay_seconds,
            self.projection_catch_up_seconds,
            self.scheduler_first_replay_seconds,
            self.scheduler_snapshot_bytes
        );
        for s in &self.services {
            out.push_str(&format!(
                "cold start {:<20} ready after {:>9.0} ms  cpu {:>7.2} s  rss {:>7.1} MiB\n",
                s.service, s.ready_ms, s.cpu_seconds, s.rss_mib
            ));
        }
        out
    }
}

/// Runs the benchmark.
pub async fn run(bench: &ColdStartBench) -> anyhow::Result<ColdStartFigures> {
    let logs = std::env::temp_dir().join(format!("flexcore-cold-start-{}", std::process::id()));
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    tracing::info!(logs = %logs.display(), "service logs");
    let db = pool(&bench.database_url).await?;

    let mut command = Service::start(bench, &logs, "flexcore-command", bench.admin_port)?;
    command.ready(bench.admin_port).await?;
    let seeded_at = Instant::now();
    let seeded = seed(bench, &db).await?;
    let seed_seconds = seeded_at.elapsed().as_secs_f64();
    let relayed_at = Instant::now();
    let events_in_log = relayed(&db, &mut command).await?;
    let relay_seconds = relayed_at.elapsed().as_secs_f64();
    // The projection's first catch-up, when its cold start is to be timed; on another
    // admin port than the command service's, which still runs.
    let mut projection_catch_up_seconds = 0.0;
    if bench.services.iter().any(|s| s == "flexcore-projection") {
        let port = bench.admin_port.checked_add(1).context("--admin-port too high")?;
        let mut projection = Service::start(bench, &logs, "flexcore-projection", port)?;
        let caught_up_at = Instant::now();
        projection.ready(port).await?;
        projection_catch_up_seconds = caught_up_at.elapsed().as_secs_f64();
        projection.stop().await;
    }
    // The scheduler's first start replays the whole log and then writes a snapshot, which
    // the timed start begins from.
    let mut scheduler_first_replay_seconds = 0.0;
    let mut scheduler_snapshot_bytes = 0;
    if bench.services.iter().any(|s| s == "flexcore-scheduler") {
        let port = bench.admin_port.checked_add(1).context("--admin-port too high")?;
        let mut scheduler = Service::start(bench, &logs, "flexcore-scheduler", port)?;
        let replayed_at = Instant::now();
        scheduler.ready(port).await?;
        let written = scheduler.logged("scheduler snapshot written").await?;
        scheduler_first_replay_seconds = replayed_at.elapsed().as_secs_f64();
        scheduler_snapshot_bytes = serde_json::from_str::<serde_json::Value>(&written)
            .ok()
            .and_then(|line| line["fields"]["bytes"].as_u64())
            .unwrap_or(0);
        scheduler.stop().await;
    }
    command.stop().await;

    let mut services = Vec::new();
    for name in &bench.services {
        let mut service = Service::start(bench, &logs, name, bench.admin_port)?;
        let ready = service.ready(bench.admin_port).await?;
        tracing::info!(service = %name, ready_ms = ready.ready_ms, "ready");
        services.push(ready);
        service.stop().await;
    }
    Ok(ColdStartFigures {
        events_in_log,
        seeded,
        seed_seconds,
        relay_seconds,
        projection_catch_up_seconds,
        scheduler_first_replay_seconds,
        scheduler_snapshot_bytes,
        services,
    })
}

async fn pool(database_url: &str) -> anyhow::Result<PgPool> {
    let shown = flexcore_config::url_text::redact(database_url);
    let options = PgConnectOptions::from_str(database_url)
        .with_context(|| format!("invalid --database-url {shown}"))?
        .disable_statement_logging();
    PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to Postgres at {shown} (--database-url / FLEXCORE__DATABASE__URL)"))
}

async fn log_end(db: &PgPool) -> anyhow::Result<u64> {
    let end: i64 = sqlx::query_scalar("SELECT coalesce(max(global_position), 0) FROM events")
        .fetch_one(db)
        .await
        .context("reading the end of the log")?;
    Ok(u64::try_from(end).unwrap_or(0))
}

/// `count` schedules spread over `pipelines`, through commands, each firing once a year
/// (1 January, 03:00 UTC): what a scheduler keeps in memory and its snapshot carries,
/// which no slot disturbs during the bench.
async fn create_schedules(connections: &[Client], pipelines: &[Uuid], count: usize) -> anyhow::Result<()> {
    const BATCH: usize = 1000;
    for start in (0..count).step_by(BATCH) {
        let batch = (start..(start + BATCH).min(count)).map(|i| {
            let client = &connections[(i / CLIENTS_PER_CONNECTION) % connections.len()];
            let body = CreateSchedule {
                schedule_id: None,
                pipeline_id: pipelines[i % pipelines.len()],
                cron: "0 3 1 1 *".to_owned(),
                timezone: "UTC".to_owned(),
                overlap: OverlapPolicy::Skip,
                catchup_window_seconds: 3600,
                catchup_cap: 1,
                jitter_seconds: 0,
                start_at: None,
                end_at: None,
                paused: false,
            };
            async move {
                match send(client, &body).await {
                    Outcome::Accepted => Ok(()),
                    other => Err(anyhow::anyhow!("schedule.create: {other:?}")),
                }
            }
        });
        try_join_all(batch).await?;
    }
    tracing::info!(count, "schedules created");
    Ok(())
}

/// Fills the log up to `bench.events` events; returns how many it inserted.
async fn seed(bench: &ColdStartBench, db: &PgPool) -> anyhow::Result<u64> {
    let at = log_end(db).await?;
    if at >= bench.events {
        tracing::info!(at, "the log is long enough; nothing seeded");
        return Ok(0);
    }
    let connections = connect(&bench.nats, PIPELINES).await?;
    let first = connections.first().context("no NATS connection")?;
    setup::register_plugins(first).await?;
    let ids = setup::create_pipelines(&connections, PIPELINES, 1).await?;
    // One real pause and resume each: the templates of the seeded toggles.
    let toggled = ids.iter().enumerate().map(|(i, &id)| {
        let client = &connections[i / CLIENTS_PER_CONNECTION];
        async move {
            for toggle in [Toggle::Pause, Toggle::Resume] {
                match toggle.send(client, id).await.0 {
                    Outcome::Accepted => {}
                    other => bail!("toggling bench pipeline {id}: {other:?}"),
                }
            }
            anyhow::Ok(())
        }
    });
    for result in join_all(toggled).await {
        result?;
    }
    create_schedules(&connections, &ids, bench.schedules).await?;
    let templates: Vec<(String, i32, String, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (event_type) event_type, schema_version, data::text, metadata::text
           FROM events WHERE aggregate_id = ANY($1) AND event_type IN ('pipeline.paused', 'pipeline.resumed')
          ORDER BY event_type, global_position DESC",
    )
    .bind(&ids)
    .fetch_all(db)
    .await
    .context("reading the toggles to copy")?;
    let template = |t: &str| {
        templates
            .iter()
            .find(|(event_type, ..)| event_type == t)
            .cloned()
            .with_context(|| format!("no {t} event of the bench pipelines in the log"))
    };
    let (paused, resumed) = (template("pipeline.paused")?, template("pipeline.resumed")?);
    let versions: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT aggregate_id, max(version) FROM events WHERE aggregate_id = ANY($1) GROUP BY 1")
            .bind(&ids)
            .fetch_all(db)
            .await
            .context("reading the pipelines' versions")?;
    let (pipelines, base): (Vec<Uuid>, Vec<i64>) = versions.into_iter().unzip();
    let per_pipeline_total = (bench.events - log_end(db).await?.min(bench.events)).div_ceil(pipelines.len() as u64);
    let per_chunk = (SEED_CHUNK / pipelines.len() as u64).max(1);
    let mut done = 0u64;
    let mut inserted = 0u64;
    while done < per_pipeline_total {
        let n = per_chunk.min(per_pipeline_total - done);
        // Toggle k (1-based) of a pipeline that is active after its real resume: odd k
        // pauses it, even k resumes it.
        let rows = sqlx::query(
            "INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_type, schema_version, data, metadata)
             SELECT gen_random_uuid(), 'pipeline', p.id, p.base + g.k,
                    CASE WHEN g.k % 2 = 1 THEN $3 ELSE $7 END,
                    CASE WHEN g.k % 2 = 1 THEN $4 ELSE $8 END,
                    CASE WHEN g.k % 2 = 1 THEN $5::json ELSE $9::json END,
                    CASE WHEN g.k % 2 = 1 THEN $6::jsonb ELSE $10::jsonb END
               FROM unnest($1::uuid[], $2::bigint[]) AS p(id, base)
              CROSS JOIN generate_series($11::bigint, $12::bigint) AS g(k)
              ORDER BY g.k, p.id",
        )
        .bind(&pipelines)
        .bind(&base)
        .bind(&paused.0)
        .bind(paused.1)
        .bind(&paused.2)
        .bind(&paused.3)
        .bind(&resumed.0)
        .bind(resumed.1)
        .bind(&resumed.2)
        .bind(&resumed.3)
        .bind(i64::try_from(done + 1)?)
        .bind(i64::try_from(done + n)?)
        .execute(db)
        .await
        .context("seeding toggles")?
        .rows_affected();
        done += n;
        inserted += rows;
        tracing::info!(inserted, "seeding");
    }
    Ok(inserted)
}

/// Waits until the relay has published the whole log; returns the log's length.
async fn relayed(db: &PgPool, command: &mut Service) -> anyhow::Result<u64> {
    let end = log_end(db).await?;
    let mut last_report = Instant::now();
    loop {
        let at: i64 = sqlx::query_scalar("SELECT global_position FROM relay_checkpoints WHERE name = 'events'")
            .fetch_one(db)
            .await
            .context("reading the relay checkpoint")?;
        if u64::try_from(at).unwrap_or(0) >= end {
            return Ok(end);
        }
        command.alive()?;
        if last_report.elapsed() > Duration::from_secs(10) {
            tracing::info!(at, end, "relaying");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A service process the bench started.
struct Service {
    name: String,
    child: Child,
    log: PathBuf,
    started: Instant,
}

impl Service {
    /// Starts binary `name` of the bench's directory with its admin server on `port`.
    fn start(bench: &ColdStartBench, logs: &Path, name: &str, port: u16) -> anyhow::Result<Self> {
        let binary = bench.bin_dir.join(name);
        if !binary.is_file() {
            bail!("{} not found; build it: cargo build --release --bins", binary.display());
        }
        // One log per start (the same service starts more than once).
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = logs.join(format!("{n}-{name}.log"));
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(&binary);
        command
            .env("FLEXCORE__DATABASE__URL", &bench.database_url)
            .env("FLEXCORE__NATS__URL", &bench.nats.url)
            .env("FLEXCORE__ADMIN__LISTEN", format!("127.0.0.1:{port}"))
            .env("FLEXCORE__TELEMETRY__LOG_FORMAT", "json")
            .env("FLEXCORE__TELEMETRY__LOG_FILTER", "info,sqlx=warn,async_nats=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        if let Some(keys) = &bench.keys_dir {
            let identity = name.strip_prefix("flexcore-").unwrap_or(name);
            command
                .env("FLEXCORE__NATS__NKEY_SEED", "")
                .env("FLEXCORE__NATS__NKEY_SEED_FILE", keys.join(format!("{identity}.nk")))
                .env("FLEXCORE__SECURITY__IDENTITIES_FILE", keys.join("identities.json"));
        }
        if name == "flexcore-runner" {
            command.env("FLEXCORE__RUNNER__SLOTS", "4");
        }
        let started = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
            started,
        })
    }

    /// An error (with the end of its log) when the process has exited.
    fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            bail!(
                "{} exited ({status}); the end of {}:\n{}",
                self.name,
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    /// Polls `/health/ready` until it answers `200`.
    async fn ready(&mut self, port: u16) -> anyhow::Result<ServiceStart> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let url = format!("http://127.0.0.1:{port}/health/ready");
        let mut last_report = Instant::now();
        loop {
            if let Ok(response) = http.get(&url).send().await {
                if response.status() == reqwest::StatusCode::OK {
                    let ready_ms = self.started.elapsed().as_secs_f64() * 1000.0;
                    let (cpu_seconds, rss_mib) = self.usage();
                    return Ok(ServiceStart {
                        service: self.name.clone(),
                        ready_ms,
                        cpu_seconds,
                        rss_mib,
                    });
                }
                if last_report.elapsed() > Duration::from_secs(10) {
                    let body = response.text().await.unwrap_or_default();
                    tracing::info!(service = %self.name, %body, "not ready yet");
                    last_report = Instant::now();
                }
            }
            self.alive()?;
            if self.started.elapsed() > READY_WITHIN {
                bail!("{} not ready within {READY_WITHIN:?}", self.name);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the service's log has a line containing `needle`; returns it.
    async fn logged(&mut self, needle: &str) -> anyhow::Result<String> {
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(line) = log.lines().find(|line| line.contains(needle)) {
                return Ok(line.to_owned());
            }
            self.alive()?;
            if self.started.elapsed() > READY_WITHIN {
                bail!("{} did not log {needle:?} within {READY_WITHIN:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// (CPU seconds, RSS MiB) of the process from `/proc`.
    fn usage(&self) -> (f64, f64) {
        let Some(pid) = self.child.id() else {
            return (0.0, 0.0);
        };
        let hz = rustix::param::clock_ticks_per_second() as f64;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the parenthesised name: utime and stime are the 12th and 13th.
        let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        let cpu = (ticks(11) + ticks(12)) / hz;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss_kib = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        (cpu, rss_kib / 1024.0)
    }

    /// SIGTERM, then a kill after 15 s.
    async fn stop(mut self) {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(service = %self.name, "did not stop in 15 s; killing it");
            let _ = self.child.kill().await;
        }
    }
}
