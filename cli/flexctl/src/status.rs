//! `flexctl status`: what is running and how far behind it is, all over NATS — the
//! command and projection services by a probe request, schedulers and runners by their
//! presence announcements, projection lag by `projection.list`, queue depth from the work
//! consumer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use flexcore_contracts::views::{ProjectionStatus, StatsView};
use flexcore_contracts::work::{RunnerPresence, SchedulerPresence};
use flexcore_contracts::{subjects, ErrorCode};
use futures::StreamExt as _;
use serde::Serialize;
use serde_json::json;

use flexcore_client::{ClientError, Unanswered};

use crate::api::Api;
use crate::cli::Output;
use crate::nats::Nats;
use crate::table::{self, Table};

/// How long presence announcements are listened for (runners announce every 2 s,
/// schedulers every second by default).
const LISTEN: Duration = Duration::from_millis(2500);

/// A service answering requests.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// Whether it answered.
    pub up: bool,
    /// Round trip, when it answered.
    pub latency_ms: Option<f64>,
    /// What went wrong, when it did not.
    pub error: Option<String>,
    /// What the probe checks, in an operator's words.
    pub check: String,
}

/// The work queue.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Queue {
    /// Work items not yet taken by a runner.
    pub waiting: u64,
    /// Work items taken and not yet finished (attempts running).
    pub in_progress: u64,
    /// Items stored in the work stream that no runner will be handed again (below the
    /// consumer's ack floor: left by a nats-server 2.9 crash or by MaxDeliver); the
    /// runners' janitor deletes those whose run has moved on.
    pub lingering: u64,
}

/// Everything `flexctl status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// NATS server version.
    pub nats_version: String,
    /// flexcore-command.
    pub command: Probe,
    /// flexcore-projection.
    pub projection: Probe,
    /// Scheduler replicas heard.
    pub schedulers: Vec<String>,
    /// Runners heard, with their slots.
    pub runners: Vec<RunnerPresence>,
    /// Projections: position and lag.
    pub projections: Vec<ProjectionStatus>,
    /// The work queue, if the work stream exists.
    pub queue: Option<Queue>,
    /// Counts from the read models.
    pub stats: Option<StatsView>,
}

/// Gathers the status.
pub async fn gather(api: &Api) -> anyhow::Result<Status> {
    let client = api.client();
    let mut schedulers = client.subscribe(subjects::SCHEDULER_PRESENCE).await?;
    let mut runners = client.subscribe(subjects::RUNNER_PRESENCE).await?;
    let listen = async {
        let mut heard_schedulers = BTreeMap::new();
        let mut heard_runners = BTreeMap::new();
        let deadline = tokio::time::sleep(LISTEN);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => break,
                Some(m) = schedulers.next() => {
                    if let Ok(p) = serde_json::from_slice::<SchedulerPresence>(&m.payload) {
                        heard_schedulers.insert(p.instance.clone(), p.alive);
                    }
                }
                Some(m) = runners.next() => {
                    if let Ok(p) = serde_json::from_slice::<RunnerPresence>(&m.payload) {
                        heard_runners.insert(p.runner_id.clone(), p);
                    }
                }
            }
        }
        let schedulers: Vec<String> = heard_schedulers
            .into_iter()
            .filter_map(|(k, alive)| alive.then_some(k))
            .collect();
        let runners: Vec<RunnerPresence> = heard_runners.into_values().filter(|p| p.alive).collect();
        (schedulers, runners)
    };
    let command = async {
        // An empty plugin enable is refused by validation without deciding anything: any
        // answer proves the command service is up and reading commands.
        let started = Instant::now();
        let once = flexcore_client::Retry::once();
        match api
            .typed()
            .command_raw("plugin.enable", bytes::Bytes::from_static(b"{}"), &once)
            .await
        {
            Ok(_) => probe_up(Service::Command, started),
            Err(e) if e.is(ErrorCode::ValidationFailed) => probe_up(Service::Command, started),
            Err(e) => probe_down(Service::Command, &e),
        }
    };
    let projection = async {
        let started = Instant::now();
        match api.query::<Vec<ProjectionStatus>>("projection.list", &json!({})).await {
            Ok(p) => (probe_up(Service::Projection, started), p),
            Err(e) => (probe_down(Service::Projection, &e), Vec::new()),
        }
    };
    let stats = async { api.query::<StatsView>("stats.get", &json!({})).await.ok() };
    let queue = async {
        let js = jetstream::new(client.clone());
        let mut consumer: jetstream::consumer::PullConsumer = js
            .get_consumer_from_stream(flexcore_security::permissions::RUNNER_CONSUMER, subjects::WORK_STREAM)
            .await
            .ok()?;
        let info = consumer.info().await.ok()?;
        let stored = js
            .get_stream(subjects::WORK_STREAM)
            .await
            .ok()?
            .cached_info()
            .state
            .messages;
        let waiting = info.num_pending;
        let in_progress = u64::try_from(info.num_ack_pending).unwrap_or(0);
        Some(Queue {
            waiting,
            in_progress,
            lingering: stored.saturating_sub(waiting + in_progress),
        })
    };
    let ((schedulers, runners), command, (projection, projections), stats, queue) =
        tokio::join!(listen, command, projection, stats, queue);
    Ok(Status {
        nats_version: client.server_info().version,
        command,
        projection,
        schedulers,
        runners,
        projections,
        queue,
        stats,
    })
}

fn probe_up(service: Service, started: Instant) -> Probe {
    Probe {
        up: true,
        latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
        error: None,
        check: service.check().to_owned(),
    }
}

/// The service a probe checks, for its operator-facing failure text.
#[derive(Debug, Clone, Copy)]
enum Service {
    /// flexcore-command, probed by a harmless command.
    Command,
    /// flexcore-projection, probed by reading the projections' positions.
    Projection,
}

impl Service {
    /// What the probe checks, in an operator's words.
    fn check(self) -> &'static str {
        match self {
            Self::Command => "a test command (refused by validation, changes nothing)",
            Self::Projection => "a read of the projections' positions",
        }
    }

    /// The binary, for "is it running?".
    fn binary(self) -> &'static str {
        match self {
            Self::Command => "flexcore-command",
            Self::Projection => "flexcore-projection",
        }
    }
}

/// Why a probe failed, in operator terms: what was checked and what that means, never the
/// request's internal name.
fn describe_failure(service: Service, error: &ClientError) -> String {
    let check = service.check();
    let binary = service.binary();
    match error {
        ClientError::Unanswered { kind, why, .. } => match kind {
            Unanswered::NoResponders => format!(
                "nothing answers {check}: no {binary} replica is connected to this NATS server (is it running?)"
            ),
            Unanswered::TimedOut => format!("{check} got no answer in time: {binary} is overloaded or stuck"),
            Unanswered::Transient => format!("{binary} failed {check} with a transient error: {}", why),
            Unanswered::Connection => format!("the NATS connection failed during {check}: {}", why),
        },
        ClientError::Refused { error, .. } => format!("{binary} refused {check} ({}): {}", error.code, error.message),
        ClientError::Stopped { .. } => format!("stopped before {check} was answered"),
        ClientError::Protocol { message, .. } => format!("{binary} gave an unreadable answer to {check}: {message}"),
    }
}

fn probe_down(service: Service, error: &ClientError) -> Probe {
    Probe {
        up: false,
        latency_ms: None,
        error: Some(describe_failure(service, error)),
        check: service.check().to_owned(),
    }
}

impl Status {
    /// True when every service kind is present.
    pub fn healthy(&self) -> bool {
        self.command.up && self.projection.up && !self.schedulers.is_empty() && !self.runners.is_empty()
    }

    /// Human text.
    pub fn text(&self) -> String {
        let probe = |p: &Probe| match (p.up, p.latency_ms) {
            (true, Some(ms)) => format!("up ({ms:.1} ms to answer {})", p.check),
            _ => format!("DOWN: {}", p.error.clone().unwrap_or_default()),
        };
        let busy: u32 = self.runners.iter().map(|r| r.busy).sum();
        let slots: u32 = self.runners.iter().map(|r| r.slots).sum();
        let mut text = table::fields(&[
            ("nats", format!("up (nats-server {})", self.nats_version)),
            ("flexcore-command", probe(&self.command)),
            ("flexcore-projection", probe(&self.projection)),
            (
                "flexcore-scheduler",
                if self.schedulers.is_empty() {
                    "DOWN: no replica announced itself".to_owned()
                } else {
                    format!("{} replica(s): {}", self.schedulers.len(), self.schedulers.join(", "))
                },
            ),
            (
                "flexcore-runner",
                if self.runners.is_empty() {
                    "DOWN: no runner announced itself".to_owned()
                } else {
                    format!("{} runner(s), {busy}/{slots} slots busy", self.runners.len())
                },
            ),
            (
                "work queue",
                self.queue.as_ref().map_or_else(
                    || "no work stream yet".to_owned(),
                    |q| match q.lingering {
                        0 => format!("{} waiting, {} in progress", q.waiting, q.in_progress),
                        n => format!(
                            "{} waiting, {} in progress ({n} stored item(s) no runner will take: see docs/troubleshooting.md)",
                            q.waiting, q.in_progress
                        ),
                    },
                ),
            ),
        ]);
        if let Some(stats) = &self.stats {
            let counts =
                |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
            text.push_str(&table::fields(&[
                ("pipelines", counts(&stats.pipelines)),
                ("runs", counts(&stats.runs)),
                (
                    "last 24 h",
                    format!(
                        "{} finished, {} failed ({:.1} %)",
                        stats.finished_last_day,
                        stats.failed_last_day,
                        stats.failure_rate_last_day * 100.0
                    ),
                ),
            ]));
        }
        let mut t = Table::new(&["PROJECTION", "POSITION", "LAG EVENTS", "LAG", "REBUILD"]);
        for p in &self.projections {
            t.row(vec![
                p.name.clone(),
                p.position.to_string(),
                p.lag_events.to_string(),
                format!("{} ms", p.lag_ms),
                p.rebuild.as_ref().map_or_else(|| "-".to_owned(), |r| r.state.clone()),
            ]);
        }
        text.push('\n');
        text.push_str(&t.render("no projections reported"));
        let mut r = Table::new(&["RUNNER", "SLOTS", "BUSY"]);
        for p in &self.runners {
            r.row(vec![p.runner_id.clone(), p.slots.to_string(), p.busy.to_string()]);
        }
        if !self.runners.is_empty() {
            text.push('\n');
            text.push_str(&r.render(""));
        }
        text
    }
}

/// Runs `flexctl status`; the exit status is non-zero when a service kind is missing.
pub async fn run(nats: &Nats, output: Output) -> anyhow::Result<()> {
    let api = nats.api().await?;
    let status = gather(&api).await?;
    table::emit(output, &status, || status.text())?;
    if status.healthy() {
        Ok(())
    } else {
        anyhow::bail!("not every FlexCore service is running (see above)")
    }
}

#[cfg(test)]
mod tests {
    use flexcore_contracts::{ErrorBody, ErrorReason};

    use super::*;

    fn unanswered(kind: Unanswered) -> ClientError {
        ClientError::Unanswered {
            what: "plugin.enable".to_owned(),
            why: "no flexcore-command is listening on NATS".to_owned(),
            kind,
            attempts: 1,
        }
    }

    #[test]
    fn a_silent_command_service_is_described_by_what_was_checked_not_by_the_probe_request() {
        let probe = probe_down(Service::Command, &unanswered(Unanswered::NoResponders));
        let error = probe.error.unwrap_or_default();
        assert!(!error.contains("plugin.enable"), "{error}");
        assert!(error.contains("a test command"), "{error}");
        assert!(error.contains("no flexcore-command replica is connected"), "{error}");
        let slow = describe_failure(Service::Command, &unanswered(Unanswered::TimedOut));
        assert!(
            slow.contains("got no answer in time") && !slow.contains("plugin.enable"),
            "{slow}"
        );
    }

    #[test]
    fn a_refused_probe_names_the_service_and_the_refusal_not_the_request() {
        let refused = ClientError::Refused {
            what: "projection.list".to_owned(),
            error: ErrorBody::new(ErrorReason::Unauthorized, "this identity may not read"),
        };
        let text = describe_failure(Service::Projection, &refused);
        assert!(!text.contains("projection.list"), "{text}");
        assert!(
            text.starts_with("flexcore-projection refused a read of the projections' positions"),
            "{text}"
        );
        assert!(text.ends_with("this identity may not read"), "{text}");
    }

    #[test]
    fn the_status_text_says_what_each_probe_checked() {
        let status = Status {
            nats_version: "2.9.10".to_owned(),
            command: probe_up(Service::Command, Instant::now()),
            projection: probe_down(Service::Projection, &unanswered(Unanswered::NoResponders)),
            schedulers: Vec::new(),
            runners: Vec::new(),
            projections: Vec::new(),
            queue: None,
            stats: None,
        };
        let text = status.text();
        assert!(
            text.contains("to answer a test command (refused by validation, changes nothing)"),
            "{text}"
        );
        assert!(
            text.contains("DOWN: nothing answers a read of the projections' positions"),
            "{text}"
        );
        assert!(
            !text.contains("plugin.enable") && !text.contains("projection.list"),
            "{text}"
        );
    }
}
