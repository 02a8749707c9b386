//! `flexctl bench http`: the HTTP gateway against the NATS contract it translates to, in
//! one run on the same stack:
//!
//! 1. `nats pause/resume`: N clients toggle their own pipeline with `pipeline.pause` /
//!    `pipeline.resume` straight over NATS (what `flexctl bench commands` measures);
//! 2. `http pause/resume`: the same commands as `POST /pipelines/{id}/pause|resume`
//!    through the gateway, N keep-alive connections;
//! 3. `http GET pipeline`: `GET /pipelines/{id}` of the same pipelines;
//! 4. `nats pipeline.get`: the same reads straight over NATS.
//!
//! Each phase has its own warm-up. The report has each phase's throughput and latency,
//! and the HTTP commands' share of the NATS throughput and their added p99.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use uuid::Uuid;

use flexctl::nats::Nats;

use super::commands::{connect, toggle, Toggle, CLIENTS_PER_CONNECTION};
use super::projection::Figures;
use super::setup;
use super::stats::PhaseStats;
use super::Window;

/// What `flexctl bench http` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The phases.
    pub phases: Vec<Figures>,
    /// HTTP command throughput as a share of the NATS command throughput.
    pub http_share_of_nats: f64,
    /// HTTP command p99 less NATS command p99, in milliseconds.
    pub added_p99_ms: f64,
}

impl Report {
    /// Human-readable lines.
    pub fn text(&self) -> String {
        let mut text: String = self.phases.iter().map(Figures::text).collect();
        text.push_str(&format!(
            "http commands: {:.1} % of the NATS throughput, p99 {:+.2} ms\n",
            self.http_share_of_nats * 100.0,
            self.added_p99_ms
        ));
        text
    }
}

/// Runs the three phases against the stack reached through `nats` and its gateway at `base_url`.
pub async fn run(
    nats: &Nats,
    base_url: &str,
    api_key: Option<&str>,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Report> {
    let connections = connect(nats, clients).await?;
    tracing::info!(clients, "registering the bench plugins and one pipeline per client");
    setup::register_plugins(&connections[0]).await?;
    let pipelines = setup::create_pipelines(&connections, clients, 1).await?;
    let base = format!("{}/api/v1/flexcore", base_url.trim_end_matches('/'));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    let result = async {
        tracing::info!("phase 1: pause/resume over NATS");
        let window = Window::after_warmup(warmup, duration);
        let tasks = pipelines.iter().enumerate().map(|(i, id)| {
            let client = connections[i / CLIENTS_PER_CONNECTION].clone();
            tokio::spawn(toggle(client, *id, window))
        });
        let nats = merged(futures::future::join_all(tasks).await, window)?;
        tracing::info!("phase 2: pause/resume through the gateway");
        let window = Window::after_warmup(warmup, duration);
        let tasks = pipelines.iter().map(|id| {
            let request = HttpClient {
                http: http.clone(),
                base: base.clone(),
                api_key: api_key.map(str::to_owned),
            };
            let id = *id;
            tokio::spawn(async move { request.toggle(id, window).await })
        });
        let http_commands = merged(futures::future::join_all(tasks).await, window)?;
        tracing::info!("phase 3: GET /pipelines/{{id}} through the gateway");
        let window = Window::after_warmup(warmup, duration);
        let tasks = pipelines.iter().map(|id| {
            let request = HttpClient {
                http: http.clone(),
                base: base.clone(),
                api_key: api_key.map(str::to_owned),
            };
            let id = *id;
            tokio::spawn(async move { request.get(id, window).await })
        });
        let http_get = merged(futures::future::join_all(tasks).await, window)?;
        tracing::info!("phase 4: pipeline.get over NATS");
        let window = Window::after_warmup(warmup, duration);
        let tasks = pipelines.iter().enumerate().map(|(i, id)| {
            let client = connections[i / CLIENTS_PER_CONNECTION].clone();
            tokio::spawn(nats_get(client, *id, window))
        });
        let nats_get = merged(futures::future::join_all(tasks).await, window)?;
        anyhow::Ok((nats, http_commands, http_get, nats_get))
    }
    .await;
    setup::archive_pipelines(&connections, &pipelines).await;
    let (nats, http_commands, http_get, nats_get) = result?;
    let phases = vec![
        Figures::of_stats("nats pause/resume", &nats),
        Figures::of_stats("http pause/resume", &http_commands),
        Figures::of_stats("http GET pipeline", &http_get),
        Figures::of_stats("nats pipeline.get", &nats_get),
    ];
    let share = phases[1].per_second / phases[0].per_second.max(f64::MIN_POSITIVE);
    let added = phases[1].latency.p99_ms - phases[0].latency.p99_ms;
    Ok(Report {
        phases,
        http_share_of_nats: share,
        added_p99_ms: added,
    })
}

/// Reads `pipeline_id` with `pipeline.get` over NATS until the window ends.
async fn nats_get(client: flexcore_client::Client, pipeline_id: Uuid, window: Window) -> anyhow::Result<PhaseStats> {
    let mut stats = PhaseStats::new(window.length())?;
    let typed = client;
    let body = serde_json::json!({ "id": pipeline_id });
    while !window.is_over(Instant::now()) {
        let started = Instant::now();
        let answer = typed
            .query_raw("pipeline.get", &body, &flexcore_client::Retry::once())
            .await;
        let finished = Instant::now();
        if window.measures(finished) {
            match &answer {
                Ok(_) => stats.record_ok(finished - started),
                Err(e) => stats.record_rejected(&e.to_string(), finished - started),
            }
        }
    }
    Ok(stats)
}

/// The phase's statistics of every client, merged.
fn merged(
    results: Vec<Result<anyhow::Result<PhaseStats>, tokio::task::JoinError>>,
    window: Window,
) -> anyhow::Result<PhaseStats> {
    let mut all = PhaseStats::new(window.length())?;
    for result in results {
        all.merge(&result.context("a bench client panicked")??)?;
    }
    if let Some(failure) = &all.first_failure {
        tracing::warn!(%failure, "first refusal or failure of the phase");
    }
    Ok(all)
}

/// One HTTP bench client.
struct HttpClient {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

impl HttpClient {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Alternates pause and resume of `pipeline_id` until the window ends (an
    /// `invalid_state` 409 re-synchronises, like the NATS clients).
    async fn toggle(self, pipeline_id: Uuid, window: Window) -> anyhow::Result<PhaseStats> {
        let mut stats = PhaseStats::new(window.length())?;
        let mut next = Toggle::Pause;
        while !window.is_over(Instant::now()) {
            let action = match next {
                Toggle::Pause => "pause",
                Toggle::Resume => "resume",
            };
            let started = Instant::now();
            let answer = self
                .request(reqwest::Method::POST, &format!("/pipelines/{pipeline_id}/{action}"))
                .send()
                .await;
            let (status, code) = match answer {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let code = if status == 200 {
                        String::new()
                    } else {
                        let body: serde_json::Value = response.json().await.unwrap_or_default();
                        body["code"].as_str().unwrap_or("?").to_owned()
                    };
                    (status, code)
                }
                Err(error) => {
                    stats.remember_failure(|| format!("{pipeline_id}: {error}"));
                    (0, String::new())
                }
            };
            let finished = Instant::now();
            if window.measures(finished) {
                match status {
                    200 => stats.record_ok(finished - started),
                    0 => stats.record_failed("transport"),
                    _ => stats.record_rejected(&code, finished - started),
                }
            }
            if status != 200 && status != 0 {
                stats.remember_failure(|| format!("{pipeline_id}: {status} {code}"));
            }
            if status == 200 || code == "invalid_state" {
                next = next.flipped();
            }
        }
        Ok(stats)
    }

    /// Reads `pipeline_id` until the window ends.
    async fn get(self, pipeline_id: Uuid, window: Window) -> anyhow::Result<PhaseStats> {
        let mut stats = PhaseStats::new(window.length())?;
        let path = format!("/pipelines/{pipeline_id}");
        while !window.is_over(Instant::now()) {
            let started = Instant::now();
            let answer = self.request(reqwest::Method::GET, &path).send().await;
            let status = match answer {
                Ok(response) => {
                    let status = response.status().as_u16();
                    // The whole body, as a client would read it.
                    let _ = response.bytes().await;
                    status
                }
                Err(error) => {
                    stats.remember_failure(|| format!("{pipeline_id}: {error}"));
                    0
                }
            };
            let finished = Instant::now();
            if window.measures(finished) {
                match status {
                    200 => stats.record_ok(finished - started),
                    0 => stats.record_failed("transport"),
                    other => stats.record_rejected(&other.to_string(), finished - started),
                }
            }
        }
        Ok(stats)
    }
}
