//! `flexctl bench lag|queries|rebuild`: the projection service's benchmarks, over NATS
//! only, against a running stack (command + projection services).
//!
//! - `lag`: open-loop `pipeline.pause`/`resume` at a fixed rate; after accepted
//!   commands a `pipeline.get` with `min_position` = the reply's global position. The
//!   figure is the time from the command's reply to the query's answer (for every
//!   `--sample`-th command, so the checks do not add a second 2,000/s load): how long
//!   after a commit the read model shows it (the service answers as soon as the projections
//!   covering pipelines, runs and schedules have applied that position).
//! - `queries`: N clients issuing `pipeline.get` for random ids, then `pipeline.list`
//!   pages of 100, each phase after a warm-up.
//! - `rebuild`: optionally seeds the log with toggles until it holds `--events` events,
//!   then rebuilds projections and reports their replay speed from `projection.list`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use flexcore_client::{Client, ClientError, Unanswered};
use flexcore_contracts::views::ProjectionStatus;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use flexctl::nats::Nats;

use super::commands::{connect, Outcome, Toggle, CLIENTS_PER_CONNECTION};
use super::setup;
use super::stats::LatencySummary;
use super::Window;

/// Latency figures of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// What was measured.
    pub name: String,
    /// Operations completed in the measured window.
    pub operations: u64,
    /// Per second.
    pub per_second: f64,
    /// Errors in the window.
    pub errors: u64,
    /// The errors by kind (the error code of a refusal, else how the request failed),
    /// where the benchmark tells them apart.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub error_kinds: BTreeMap<String, u64>,
    /// Latency percentiles.
    pub latency: LatencySummary,
}

impl Figures {
    /// The figures of `histogram` (microseconds) over `window`.
    pub fn of(name: &str, histogram: &Histogram<u64>, errors: u64, window: Duration) -> Self {
        Self {
            name: name.to_owned(),
            operations: histogram.len(),
            per_second: histogram.len() as f64 / window.as_secs_f64(),
            errors,
            error_kinds: BTreeMap::new(),
            latency: LatencySummary::of(histogram),
        }
    }

    /// The figures of a phase whose errors were counted by kind.
    fn of_kinds(name: &str, histogram: &Histogram<u64>, errors: BTreeMap<String, u64>, window: Duration) -> Self {
        Self {
            error_kinds: errors.clone(),
            ..Self::of(name, histogram, errors.values().sum(), window)
        }
    }

    /// The figures of a phase's statistics (refusals and failures as errors).
    pub fn of_stats(name: &str, stats: &super::stats::PhaseStats) -> Self {
        Self {
            name: name.to_owned(),
            operations: stats.ok,
            per_second: stats.per_second(),
            errors: stats.errors(),
            error_kinds: BTreeMap::new(),
            latency: stats.latency(),
        }
    }

    /// One human-readable line.
    pub fn text(&self) -> String {
        let l = &self.latency;
        let mut line = format!(
            "{:<28} {:>9} ops  {:>10.0}/s  errors {:>4}  p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms\n",
            self.name, self.operations, self.per_second, self.errors, l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms
        );
        if !self.error_kinds.is_empty() {
            let kinds: Vec<String> = self.error_kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
            line.push_str(&format!("{:<28} errors: {}\n", "", kinds.join(", ")));
        }
        line
    }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).context("histogram")
}

async fn query(client: &Client, name: &str, body: serde_json::Value) -> Result<serde_json::Value, ClientError> {
    let ok = client.query_raw(name, &body, &flexcore_client::Retry::once()).await?;
    Ok(ok.data.to_value())
}

/// The name a failed query is counted under: the refusal's error code, else how it failed.
/// Sends query `name` and checks only what the client checks of every reply: that it is a
/// well-formed `QueryOk` (its `data` one syntactically valid JSON value) or a refusal. The
/// timed phases of `bench queries` use it: `data` is not parsed a second time into a tree
/// nobody reads, which cost the benchmark client as much CPU per list page as Postgres.
async fn query_checked(client: &Client, name: &str, body: serde_json::Value) -> Result<(), ClientError> {
    client
        .query_raw(name, &body, &flexcore_client::Retry::once())
        .await
        .map(drop)
}

fn query_error_kind(error: &ClientError) -> String {
    match error {
        ClientError::Refused { error, .. } => error.code.as_str().to_owned(),
        ClientError::Unanswered { kind, .. } => match kind {
            Unanswered::NoResponders => "no_responders",
            Unanswered::TimedOut => "timed_out",
            Unanswered::Transient => "unavailable",
            Unanswered::Connection => "transport",
        }
        .to_owned(),
        ClientError::Stopped { .. } => "stopped".to_owned(),
        ClientError::Protocol { .. } => "malformed_reply".to_owned(),
    }
}

/// The name a failed command is counted under.
fn command_error_kind(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Accepted => "accepted".to_owned(),
        Outcome::Rejected(error) => error.code.as_str().to_owned(),
        Outcome::Failed(failure, _) => failure.as_str().to_owned(),
    }
}

/// Every projection's status.
pub async fn projections(client: &Client) -> anyhow::Result<Vec<ProjectionStatus>> {
    Ok(serde_json::from_value(
        query(client, "projection.list", json!({})).await?,
    )?)
}

/// Waits until no projection lags.
pub async fn wait_caught_up(client: &Client, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if projections(client).await?.iter().all(|p| p.lag_events == 0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the projections did not catch up within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `flexctl bench lag`.
pub async fn lag(
    nats: &Nats,
    rate: u32,
    pipelines: usize,
    sample: u64,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Figures> {
    let sample = sample.max(1);
    let connections = connect(nats, pipelines).await?;
    let first = connections.first().context("no NATS connection")?.clone();
    setup::register_plugins(&first).await?;
    let ids = setup::create_pipelines(&connections, pipelines, 1).await?;
    wait_caught_up(&first, Duration::from_secs(60)).await?;
    tracing::info!(rate, pipelines, "measuring event → read model lag");
    let window = Window::after_warmup(warmup, duration);
    let interval = Duration::from_secs_f64(pipelines as f64 / f64::from(rate.max(1)));
    let results = Recorder::new()?;
    let tasks: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, &pipeline_id)| {
            let client = connections[i / CLIENTS_PER_CONNECTION].clone();
            let results = results.clone();
            // Spread the clients' phases over one interval.
            let offset = interval.mul_f64(i as f64 / pipelines as f64);
            tokio::spawn(async move {
                toggle_and_read(client, pipeline_id, interval, offset, window, sample, results).await
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    setup::archive_pipelines(&connections, &ids).await;
    let (h, errors) = results.take()?;
    Ok(Figures::of_kinds(
        &format!("lag at {rate}/s (reply→visible)"),
        &h,
        errors,
        window.length(),
    ))
}

async fn toggle_and_read(
    client: Client,
    pipeline_id: Uuid,
    interval: Duration,
    offset: Duration,
    window: Window,
    sample: u64,
    results: Arc<Recorder>,
) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next = Toggle::Pause;
    let mut sent: u64 = 0;
    let get = "pipeline.get";
    while !window.is_over(Instant::now()) {
        ticker.tick().await;
        let position = match next.send(&client, pipeline_id).await {
            (_, Some(accepted)) => accepted.global_position,
            (outcome @ Outcome::Failed(..), _) => {
                results.error(window.measures(Instant::now()), command_error_kind(&outcome), || {
                    format!("{outcome:?}")
                });
                continue;
            }
            (outcome, _) => {
                next = next.flipped();
                results.error(window.measures(Instant::now()), command_error_kind(&outcome), || {
                    format!("{outcome:?}")
                });
                continue;
            }
        };
        next = next.flipped();
        sent += 1;
        if !sent.is_multiple_of(sample) {
            continue;
        }
        let replied = Instant::now();
        // Checked on the side, so the command rate stays open-loop.
        let (client, get, results) = (client.clone(), get, results.clone());
        tokio::spawn(async move {
            let seen = query(&client, get, json!({"id": pipeline_id, "min_position": position})).await;
            let visible = Instant::now();
            if window.measures(visible) {
                match seen {
                    Ok(_) => results.record(visible - replied),
                    Err(error) => results.error(true, query_error_kind(&error), || error.to_string()),
                }
            }
        });
    }
    // Let the last visibility checks finish.
    tokio::time::sleep(Duration::from_secs(6)).await;
    Ok(())
}

/// `flexctl bench queries`: get-by-id, then list pages.
pub async fn queries(
    nats: &Nats,
    clients: usize,
    pipelines: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Vec<Figures>> {
    let connections = connect(nats, clients.max(pipelines)).await?;
    let first = connections.first().context("no NATS connection")?.clone();
    setup::register_plugins(&first).await?;
    let ids = Arc::new(setup::create_pipelines(&connections, pipelines, 1).await?);
    wait_caught_up(&first, Duration::from_secs(120)).await?;
    let mut figures = Vec::new();
    for phase in ["pipeline.get", "pipeline.list (100/page)"] {
        tracing::info!(clients, phase, "measuring queries");
        let window = Window::after_warmup(warmup, duration);
        let results = Recorder::new()?;
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                let client = connections[i / CLIENTS_PER_CONNECTION].clone();
                let (results, ids) = (results.clone(), ids.clone());
                let list = phase.starts_with("pipeline.list");
                tokio::spawn(async move {
                    let get = "pipeline.get";
                    let list_subject = "pipeline.list";
                    let mut n = i;
                    while !window.is_over(Instant::now()) {
                        n = n
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407);
                        let started = Instant::now();
                        let answer = if list {
                            query_checked(&client, list_subject, json!({"limit": 100})).await
                        } else {
                            let id = ids[(n >> 33) % ids.len()];
                            query_checked(&client, get, json!({"id": id})).await
                        };
                        let done = Instant::now();
                        if window.measures(done) {
                            match answer {
                                Ok(_) => results.record(done - started),
                                Err(error) => results.error(true, query_error_kind(&error), || error.to_string()),
                            }
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await?;
        }
        let (h, errors) = results.take()?;
        figures.push(Figures::of_kinds(phase, &h, errors, window.length()));
    }
    setup::archive_pipelines(&connections, &ids).await;
    Ok(figures)
}

/// Result of `flexctl bench rebuild`.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildFigures {
    /// Projection.
    pub name: String,
    /// Events replayed.
    pub events: u64,
    /// Wall time from request to swap.
    pub seconds: f64,
    /// Replay speed reported by the service.
    pub events_per_second: f64,
}

/// `flexctl bench rebuild`.
pub async fn rebuild(nats: &Nats, names: &[String], events: u64) -> anyhow::Result<Vec<RebuildFigures>> {
    let connections = connect(nats, 64).await?;
    let first = connections.first().context("no NATS connection")?.clone();
    let logged = |all: &[ProjectionStatus]| all.iter().find(|p| p.name == "audit").map_or(0, |p| p.position);
    if logged(&projections(&first).await?) < events {
        tracing::info!(events, "seeding the event log with pipeline toggles");
        setup::register_plugins(&first).await?;
        let ids = setup::create_pipelines(&connections, 64, 1).await?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, &pipeline_id)| {
                let client = connections[i / CLIENTS_PER_CONNECTION].clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut next = Toggle::Pause;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if !matches!(next.send(&client, pipeline_id).await.0, Outcome::Failed(..)) {
                            next = next.flipped();
                        }
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let at = logged(&projections(&first).await?);
            tracing::info!(at, of = events, elapsed = ?started.elapsed(), "seeding");
            if at >= events {
                break;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for task in tasks {
            task.await??;
        }
        setup::archive_pipelines(&connections, &ids).await;
    }
    wait_caught_up(&first, Duration::from_secs(600)).await?;
    let mut out = Vec::new();
    for name in names {
        let started = Instant::now();
        query(&first, "projection.rebuild", json!({"name": name})).await?;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let all = projections(&first).await?;
            let status = all
                .iter()
                .find(|p| &p.name == name)
                .and_then(|p| p.rebuild.clone())
                .with_context(|| format!("no rebuild status for {name}"))?;
            match status.state.as_str() {
                "done" => {
                    out.push(RebuildFigures {
                        name: name.clone(),
                        events: status.processed,
                        seconds: started.elapsed().as_secs_f64(),
                        events_per_second: status.events_per_second.unwrap_or_default(),
                    });
                    break;
                }
                "failed" => bail!("the rebuild of {name} failed: {}", status.error.unwrap_or_default()),
                _ => tracing::info!(name, processed = status.processed, target = status.target, "rebuilding"),
            }
        }
    }
    Ok(out)
}

/// A histogram and the errors by kind, shared by the clients of a phase.
struct Recorder(std::sync::Mutex<(Histogram<u64>, BTreeMap<String, u64>)>);

impl Recorder {
    fn new() -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self(std::sync::Mutex::new((histogram()?, BTreeMap::new())))))
    }

    fn record(&self, latency: Duration) {
        if let Ok(mut g) = self.0.lock() {
            let _ = g.0.record(latency.as_micros().max(1) as u64);
        }
    }

    /// Counts an error of `kind` (when `counted`: inside the measured window); the first
    /// of each kind is logged with its `detail`, to explain it.
    fn error(&self, counted: bool, kind: String, detail: impl FnOnce() -> String) {
        if counted {
            if let Ok(mut g) = self.0.lock() {
                let n = g.1.entry(kind).or_default();
                if *n == 0 {
                    tracing::warn!(detail = detail(), "first error of its kind in this phase");
                }
                *n += 1;
            }
        }
    }

    fn take(&self) -> anyhow::Result<(Histogram<u64>, BTreeMap<String, u64>)> {
        let g = self
            .0
            .lock()
            .map_err(|_| anyhow::anyhow!("a benchmark client panicked"))?;
        Ok((g.0.clone(), g.1.clone()))
    }
}
