//! `flexctl bench console`: the web console's page times with large read models.
//!
//! 1. **Seed** (not timed, skipped for what is already there): pipelines until the read
//!    models hold `--pipelines`, schedules on the first `--schedules` of them, and runs
//!    until they hold `--runs`, each run taken through its life by the commands a runner
//!    would send (`run.claim`, then `run.succeed` or `run.fail`; some are cancelled, some
//!    left queued or running), signed as the runner identity given by
//!    `--runner-seed-file`. Start the stack without a runner (`flexctl dev --no-runner`)
//!    so that nothing else takes the queued runs.
//! 2. **Measure**: one client requests each kind of page in turn (overview, pipeline
//!    list, search, pipeline page, editor, runs list and filters, run page, schedules,
//!    plugins, audit log), `--requests` times each after a warm-up, one request at a
//!    time, so each figure is the gateway's and the services' time plus loopback; a page
//!    that does not answer 200 with a whole HTML document counts as an error.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use flexcore_client::Client;
use flexcore_contracts::commands::{
    CancelRun, ClaimRun, CreatePipeline, CreateSchedule, FailRun, RequestRun, SucceedRun,
};
use flexcore_contracts::model::{OverlapPolicy, RetryPolicy, RunError, RunTrigger};
use flexcore_security::Identity;
use futures::{StreamExt as _, TryStreamExt as _};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use flexctl::nats::Nats;

use super::commands::{connect, send_accepted, Outcome, CLIENTS_PER_CONNECTION};
use super::projection::{wait_caught_up, Figures};
use super::setup;

/// Commands in flight while seeding.
const SEED_CONCURRENCY: usize = 64;
/// Runs a pipeline may have active at once (the seeded queued and running ones stay).
const MAX_ACTIVE_RUNS: u32 = 100;
/// Unmeasured requests of each page before its measured ones.
const WARMUP_REQUESTS: usize = 20;
/// How the names of the seeded pipelines begin.
const NAME_PREFIX: &str = "console-";
/// Zones the seeded schedules are spread over.
const ZONES: [&str; 4] = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"];

/// What to seed and how long to measure.
#[derive(Debug, Clone)]
pub struct ConsoleBench {
    /// The gateway's base URL.
    pub url: String,
    /// API key or JWT (without one, anonymous).
    pub api_key: Option<String>,
    /// Pipelines the read models should hold.
    pub pipelines: u64,
    /// Runs the read models should hold.
    pub runs: u64,
    /// Schedules the read models should hold.
    pub schedules: u64,
    /// The runner identity the seeded runs are claimed and ended as (none: seed no runs).
    pub runner: Option<Identity>,
    /// Measured requests per page.
    pub requests: usize,
}

/// What `flexctl bench console` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The read models' sizes while measuring.
    pub pipelines: u64,
    /// Runs in the read models.
    pub runs: u64,
    /// Schedules in the read models.
    pub schedules: u64,
    /// Each page's figures.
    pub pages: Vec<Figures>,
    /// The slowest page's p99, in milliseconds.
    pub worst_p99_ms: f64,
}

impl Report {
    /// Human-readable lines.
    pub fn text(&self) -> String {
        let mut text = format!(
            "read models: {} pipelines, {} runs, {} schedules\n",
            self.pipelines, self.runs, self.schedules
        );
        text.extend(self.pages.iter().map(Figures::text));
        text.push_str(&format!("slowest page p99: {:.2} ms\n", self.worst_p99_ms));
        text
    }
}

/// Seeds what is missing, then times the pages.
pub async fn run(nats: &Nats, bench: &ConsoleBench) -> anyhow::Result<Report> {
    let connections = connect(nats, SEED_CONCURRENCY).await?;
    let first = connections.first().context("no NATS connection")?.clone();
    let counts = sizes(&first).await?;
    tracing::info!(
        pipelines = counts.pipelines,
        runs = counts.runs,
        schedules = counts.schedules,
        "the read models hold"
    );
    setup::register_plugins(&first).await?;
    let mut pipelines = pipeline_ids(&first).await?;
    let missing = bench.pipelines.saturating_sub(counts.pipelines);
    if missing > 0 {
        tracing::info!(missing, "seeding pipelines");
        pipelines.extend(seed_pipelines(&connections, missing).await?);
    }
    if pipelines.is_empty() {
        bail!(
            "the read models hold {} pipelines, none of them this bench's ({NAME_PREFIX}…) and active, so the runs \
             and schedules have nowhere to go: ask for more --pipelines than there are",
            counts.pipelines
        );
    }
    let missing = bench.schedules.saturating_sub(counts.schedules);
    if missing > 0 {
        tracing::info!(missing, "seeding schedules");
        seed_schedules(&connections, &pipelines, missing).await?;
    }
    let missing = bench.runs.saturating_sub(counts.runs);
    if missing > 0 {
        let Some(runner) = &bench.runner else {
            bail!(
                "the read models hold {} runs of the {} asked for: give --runner-seed-file (flexctl dev: \
                 .flexcore/keys/runner.nk) to seed the rest",
                counts.runs,
                bench.runs
            );
        };
        tracing::info!(missing, "seeding runs (request, claim, end)");
        seed_runs(nats, &connections, runner, &pipelines, missing).await?;
    }
    wait_caught_up(&first, Duration::from_secs(600)).await?;
    let counts = sizes(&first).await?;
    let pages = measure(bench, &first, &pipelines).await?;
    let worst_p99_ms = pages.iter().map(|p| p.latency.p99_ms).fold(0.0, f64::max);
    Ok(Report {
        pipelines: counts.pipelines,
        runs: counts.runs,
        schedules: counts.schedules,
        pages,
        worst_p99_ms,
    })
}

/// How much the read models hold.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    pipelines: u64,
    runs: u64,
    schedules: u64,
}

async fn query(client: &Client, name: &str, body: Value) -> anyhow::Result<(Value, Option<String>)> {
    let ok = client
        .query_raw(name, &body, &flexcore_client::Retry::once())
        .await
        .with_context(|| format!("query {name}"))?;
    Ok((ok.data.to_value(), ok.next_cursor))
}

async fn sizes(client: &Client) -> anyhow::Result<Sizes> {
    let (stats, _) = query(client, "stats.get", json!({})).await?;
    let total = |key: &str| {
        stats[key]
            .as_object()
            .map(|by_state| by_state.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0)
    };
    Ok(Sizes {
        pipelines: total("pipelines"),
        runs: total("runs"),
        schedules: total("schedules"),
    })
}

/// The active pipelines an earlier run of this bench seeded (`console-…`): the seeded runs
/// and schedules go to them too, never to a pipeline of someone else.
async fn pipeline_ids(client: &Client) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut body = json!({"state": "active", "name": format!("{NAME_PREFIX}*"), "limit": 1000});
        if let Some(c) = &cursor {
            body["cursor"] = c.clone().into();
        }
        let (page, next) = query(client, "pipeline.list", body).await?;
        ids.extend(
            page.as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["pipeline_id"].as_str()?.parse::<Uuid>().ok()),
        );
        match next {
            Some(next) => cursor = Some(next),
            None => return Ok(ids),
        }
    }
}

/// Sends `count` items' commands with at most [`SEED_CONCURRENCY`] in flight, logging
/// progress; the first failure stops the seeding.
async fn seed<T, F, Fut>(what: &str, count: u64, f: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let started = Instant::now();
    let mut done = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut items = futures::stream::iter(0..count)
        .map(f)
        .buffer_unordered(SEED_CONCURRENCY);
    while let Some(item) = items.try_next().await? {
        done.push(item);
        if done.len() % 10_000 == 0 {
            tracing::info!(what, done = done.len(), of = count, "seeding");
        }
    }
    tracing::info!(
        what,
        count,
        per_second = format!("{:.0}", count as f64 / started.elapsed().as_secs_f64()),
        "seeded"
    );
    Ok(done)
}

fn accepted(what: String, outcome: (Outcome, Option<flexcore_contracts::reply::Accepted>)) -> anyhow::Result<()> {
    match outcome.0 {
        Outcome::Accepted => Ok(()),
        Outcome::Rejected(e) => bail!("{what} was refused: {e}"),
        Outcome::Failed(_, detail) => bail!("{what}: {detail}"),
    }
}

async fn seed_pipelines(connections: &[Client], count: u64) -> anyhow::Result<Vec<Uuid>> {
    let prefix: String = Uuid::new_v4().simple().to_string().chars().take(6).collect();
    let steps = setup::steps()?;
    let clients = connections;
    seed("pipelines", count, |i| {
        let client = clients[usize::try_from(i).unwrap_or(0) / CLIENTS_PER_CONNECTION % clients.len()].clone();
        let steps = steps.clone();
        let prefix = prefix.clone();
        async move {
            let pipeline_id = Uuid::new_v4();
            let name = format!("{NAME_PREFIX}{prefix}-{i:06}");
            let command = CreatePipeline {
                pipeline_id: Some(pipeline_id),
                name: name.parse()?,
                owner: format!("team-{}", i % 12).parse()?,
                description: Some("Seeded by flexctl bench console.".to_owned()),
                tags: vec!["bench".parse()?, format!("region-{}", i % 5).parse()?],
                steps,
                max_active_runs: MAX_ACTIVE_RUNS,
                retry: RetryPolicy::default(),
                run_timeout_seconds: 86_400,
            };
            accepted(
                format!("creating pipeline {name}"),
                send_accepted(&client, &command).await,
            )?;
            Ok(pipeline_id)
        }
    })
    .await
}

async fn seed_schedules(connections: &[Client], pipelines: &[Uuid], count: u64) -> anyhow::Result<()> {
    let clients = connections;
    seed("schedules", count, |i| {
        let at = usize::try_from(i).unwrap_or(0);
        let client = clients[at / CLIENTS_PER_CONNECTION % clients.len()].clone();
        let pipeline_id = pipelines[at % pipelines.len()];
        async move {
            // Daily at a minute spread over the day; every tenth paused.
            let command = CreateSchedule {
                schedule_id: None,
                pipeline_id,
                cron: format!("{} {} * * *", i % 60, (i / 60) % 24),
                timezone: ZONES[at % ZONES.len()].to_owned(),
                overlap: OverlapPolicy::Skip,
                catchup_window_seconds: 3600,
                catchup_cap: 1,
                jitter_seconds: 0,
                start_at: None,
                end_at: None,
                paused: i % 10 == 9,
            };
            accepted(
                format!("creating a schedule of pipeline {pipeline_id}"),
                send_accepted(&client, &command).await,
            )
        }
    })
    .await
    .map(drop)
}

/// Where a seeded run ends: 70 % succeeded, 15 % failed, 5 % cancelled, 5 % running, 5 %
/// queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Succeeded,
    Failed,
    Cancelled,
    Running,
    Queued,
}

impl Fate {
    fn of(i: u64) -> Self {
        match i % 20 {
            0..=13 => Self::Succeeded,
            14..=16 => Self::Failed,
            17 => Self::Cancelled,
            18 => Self::Running,
            _ => Self::Queued,
        }
    }
}

async fn seed_runs(
    nats: &Nats,
    connections: &[Client],
    runner: &Identity,
    pipelines: &[Uuid],
    count: u64,
) -> anyhow::Result<()> {
    let operators = connections;
    let runners: Vec<_> = nats
        .connections_as(SEED_CONCURRENCY, Some(runner))
        .await
        .context("connecting as the runner identity")?
        .into_iter()
        .map(|c| flexcore_client::Client::new(c).with_identity(runner.clone()))
        .collect();
    let runner_id: flexcore_contracts::values::Label = "flexctl-bench-console".parse()?;
    seed("runs", count, |i| {
        let at = usize::try_from(i).unwrap_or(0);
        let operator = operators[at / CLIENTS_PER_CONNECTION % operators.len()].clone();
        let runner = runners[at / CLIENTS_PER_CONNECTION % runners.len()].clone();
        let pipeline_id = pipelines[at % pipelines.len()];
        let runner_id = runner_id.clone();
        async move {
            let run_id = Uuid::new_v4();
            let request = RequestRun {
                run_id: Some(run_id),
                pipeline_id,
                trigger: RunTrigger::Api,
                schedule_id: None,
                scheduled_for: None,
            };
            accepted(
                format!("requesting a run of {pipeline_id}"),
                send_accepted(&operator, &request).await,
            )?;
            let fate = Fate::of(i);
            match fate {
                Fate::Queued => return Ok(()),
                Fate::Cancelled => {
                    let cancel = CancelRun {
                        run_id,
                        reason: Some("seeded by flexctl bench console".to_owned()),
                    };
                    return accepted(
                        format!("cancelling run {run_id}"),
                        send_accepted(&operator, &cancel).await,
                    );
                }
                _ => {}
            }
            let claim = ClaimRun {
                run_id,
                attempt: 1,
                runner_id,
                lease_seconds: 86_400,
            };
            accepted(format!("claiming run {run_id}"), send_accepted(&runner, &claim).await)?;
            let counters = [("customers".to_owned(), i % 1000), ("orders".to_owned(), i % 7919)]
                .into_iter()
                .collect();
            match fate {
                Fate::Succeeded => accepted(
                    format!("ending run {run_id}"),
                    send_accepted(
                        &runner,
                        &SucceedRun {
                            run_id,
                            attempt: 1,
                            counters,
                        },
                    )
                    .await,
                ),
                Fate::Failed => {
                    let error = RunError {
                        code: "trap".to_owned(),
                        message: "seeded failure: the extractor trapped".to_owned(),
                        step: Some(0),
                    };
                    let fail = FailRun {
                        run_id,
                        attempt: 1,
                        error,
                        retryable: false,
                        counters,
                    };
                    accepted(format!("failing run {run_id}"), send_accepted(&runner, &fail).await)
                }
                _ => Ok(()),
            }
        }
    })
    .await
    .map(drop)
}

/// The pages measured: name and path.
fn pages(pipeline: Uuid, run: Uuid, name_prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("overview", "/".to_owned()),
        ("pipelines", "/console/pipelines".to_owned()),
        (
            "pipelines ?q= (name search)",
            format!("/console/pipelines?q={name_prefix}"),
        ),
        ("pipelines ?state=paused", "/console/pipelines?state=paused".to_owned()),
        ("pipeline page", format!("/console/pipelines/{pipeline}")),
        ("pipeline editor", format!("/console/pipelines/{pipeline}/edit")),
        ("runs", "/console/runs".to_owned()),
        ("runs ?state=failed", "/console/runs?state=failed".to_owned()),
        ("runs ?pipeline=", format!("/console/runs?pipeline={pipeline}")),
        ("run page", format!("/console/runs/{run}")),
        ("schedules", "/console/schedules".to_owned()),
        ("plugins", "/console/plugins".to_owned()),
        ("audit log", "/console/events".to_owned()),
        (
            "audit log ?aggregate_type=run",
            "/console/events?aggregate_type=run".to_owned(),
        ),
    ]
}

/// Times every page, one request at a time; each request of a page with an id uses another
/// pipeline or run.
async fn measure(bench: &ConsoleBench, nats: &Client, pipelines: &[Uuid]) -> anyhow::Result<Vec<Figures>> {
    let (runs, _) = query(nats, "run.list", json!({"limit": 1000})).await?;
    let runs: Vec<Uuid> = runs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["run_id"].as_str()?.parse().ok())
        .collect();
    let (first, _) = query(
        nats,
        "pipeline.list",
        json!({"limit": 1, "sort_by": "name", "order": "asc"}),
    )
    .await?;
    let name = first[0]["name"].as_str().unwrap_or("console");
    // A prefix matching a few dozen names: the name less its last two characters.
    let prefix: String = name.chars().take(name.chars().count().saturating_sub(2)).collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    let base = bench.url.trim_end_matches('/');
    let kinds = pages(Uuid::nil(), Uuid::nil(), &prefix).len();
    let mut figures = Vec::with_capacity(kinds);
    for kind in 0..kinds {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let mut errors = 0u64;
        let mut first_error = None;
        let started = Instant::now();
        for i in 0..WARMUP_REQUESTS + bench.requests {
            let pipeline = pipelines[i * 7919 % pipelines.len()];
            let run = runs.get(i * 31 % runs.len().max(1)).copied().unwrap_or_default();
            let (name, path) = pages(pipeline, run, &prefix).swap_remove(kind);
            let mut request = http.get(format!("{base}{path}"));
            if let Some(key) = &bench.api_key {
                request = request.bearer_auth(key);
            }
            let at = Instant::now();
            let outcome = match request.send().await {
                Ok(response) if response.status().is_success() => match response.text().await {
                    Ok(body) if body.trim_end().ends_with("</html>") => Ok(()),
                    Ok(_) => Err(format!("{name}: {path} answered an incomplete page")),
                    Err(e) => Err(format!("{name}: {path}: {e}")),
                },
                Ok(response) => Err(format!("{name}: {path} answered {}", response.status())),
                Err(e) => Err(format!("{name}: {path}: {e}")),
            };
            let micros = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
            if i < WARMUP_REQUESTS {
                continue;
            }
            match outcome {
                Ok(()) => histogram.record(micros.max(1))?,
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        let (name, _) = pages(Uuid::nil(), Uuid::nil(), &prefix).swap_remove(kind);
        if let Some(e) = first_error {
            tracing::warn!(page = name, errors, first = %e, "errors");
        }
        figures.push(Figures::of(name, &histogram, errors, started.elapsed()));
    }
    Ok(figures)
}
