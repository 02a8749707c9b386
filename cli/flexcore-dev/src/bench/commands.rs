//! Phases 0 and 1: plugins and one pipeline per client (not timed), then N clients
//! toggling their own pipeline with `pipeline.pause` / `pipeline.resume` over NATS.
//!
//! Every request goes through the typed client, once (a benchmark measures single tries),
//! with a fresh `command_id`, so every one is a new command that appends one event.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use flexcore_client::{Client, ClientError, Retry, Unanswered};
use flexcore_contracts::commands::{CommandBody, PausePipeline, ResumePipeline};
use flexcore_contracts::reply::Accepted;
use flexcore_contracts::{ErrorBody, ErrorCode};
use flexctl::nats::Nats;
use uuid::Uuid;

use super::setup;
use super::stats::PhaseStats;
use super::Window;

/// How long one command request waits for its reply.
pub use flexctl::nats::REQUEST_TIMEOUT;
/// What a run without a command service says.
pub const NO_SERVICE: &str = "no command service answers on flexcore.cmd.>: start flexcore-command first";
/// Benchmark clients sharing one NATS connection.
pub use flexctl::nats::CLIENTS_PER_CONNECTION;
/// Pause of a client whose request found no responder, so a vanished service is not
/// hammered in a tight loop.
const NO_RESPONDERS_BACKOFF: Duration = Duration::from_millis(100);
/// Why a request got no usable reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No reply within [`REQUEST_TIMEOUT`].
    TimedOut,
    /// Nobody listens on the subject.
    NoResponders,
    /// A reply that is not a command reply.
    MalformedReply,
    /// Anything else (connection lost, …).
    Other,
}

impl Failure {
    /// The name errors are counted under.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TimedOut => "timed_out",
            Self::NoResponders => "no_responders",
            Self::MalformedReply => "malformed_reply",
            Self::Other => "transport",
        }
    }
}

/// What became of one command request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `{"ok":true,…}`.
    Accepted,
    /// `{"ok":false,"error":…}`.
    Rejected(ErrorBody),
    /// No usable reply.
    Failed(Failure, String),
}

/// The two commands a client alternates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toggle {
    /// `pipeline.pause`.
    Pause,
    /// `pipeline.resume`.
    Resume,
}

impl Toggle {
    /// The other command.
    pub fn flipped(self) -> Self {
        match self {
            Self::Pause => Self::Resume,
            Self::Resume => Self::Pause,
        }
    }

    /// Sends this command for `pipeline_id` once; the accepted reply, if it was.
    pub async fn send(self, client: &Client, pipeline_id: Uuid) -> (Outcome, Option<Accepted>) {
        match self {
            Self::Pause => {
                send_accepted(
                    client,
                    &PausePipeline {
                        pipeline_id,
                        reason: None,
                    },
                )
                .await
            }
            Self::Resume => send_accepted(client, &ResumePipeline { pipeline_id }).await,
        }
    }

    /// The command to send after this one ended in `outcome`. An `invalid_state` refusal
    /// means the pipeline already is where this command would put it (an earlier request
    /// timed out here but committed there), so the client flips to re-synchronise; after
    /// any other refusal or failure it tries the same command again.
    pub fn after(self, outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Accepted => self.flipped(),
            Outcome::Rejected(e) if e.code == ErrorCode::InvalidState => self.flipped(),
            Outcome::Rejected(_) | Outcome::Failed(..) => self,
        }
    }
}

/// Sends one command once (a fresh `command_id`) through the typed client (signed as its
/// identity) and classifies the reply.
pub async fn send<C: CommandBody>(client: &Client, command: &C) -> Outcome {
    send_accepted(client, command).await.0
}

/// [`send`], also returning the accepted reply.
pub async fn send_accepted<C: CommandBody>(client: &Client, command: &C) -> (Outcome, Option<Accepted>) {
    let typed = client.clone().with_timeout(REQUEST_TIMEOUT);
    match typed.command(command).retry(Retry::once()).send().await {
        Ok(accepted) => (Outcome::Accepted, Some(accepted)),
        Err(ClientError::Refused { error, .. }) => (Outcome::Rejected(error), None),
        Err(ClientError::Unanswered { kind, why, .. }) => {
            let failure = match kind {
                Unanswered::TimedOut => Failure::TimedOut,
                Unanswered::NoResponders => Failure::NoResponders,
                Unanswered::Transient | Unanswered::Connection => Failure::Other,
            };
            (Outcome::Failed(failure, why), None)
        }
        Err(ClientError::Protocol { message, .. }) => (Outcome::Failed(Failure::MalformedReply, message), None),
        Err(error @ ClientError::Stopped { .. }) => (Outcome::Failed(Failure::Other, error.to_string()), None),
    }
}

/// Phases 0 and 1 against the command service reachable through `nats`: the accepted
/// commands, refusals and latencies of the measured window.
pub async fn run(nats: &Nats, clients: usize, warmup: Duration, duration: Duration) -> anyhow::Result<PhaseStats> {
    let connections = connect(nats, clients).await?;
    tracing::info!(
        clients,
        "phase 0: registering the bench plugins and one pipeline per client"
    );
    let first = connections.first().context("no NATS connection")?;
    setup::register_plugins(first).await?;
    let pipelines = setup::create_pipelines(&connections, clients, 1).await?;

    tracing::info!(
        clients,
        warmup = %flexctl::duration::format_duration(warmup),
        duration = %flexctl::duration::format_duration(duration),
        "phase 1: toggling pipelines (pipeline.pause / pipeline.resume)"
    );
    let window = Window::after_warmup(warmup, duration);
    let tasks: Vec<_> = pipelines
        .iter()
        .enumerate()
        .map(|(i, &pipeline_id)| {
            let client = connections[i / CLIENTS_PER_CONNECTION].clone();
            tokio::spawn(toggle(client, pipeline_id, window))
        })
        .collect();
    let mut total = PhaseStats::new(window.length())?;
    for task in tasks {
        total.merge(&task.await.context("a benchmark client stopped unexpectedly")??)?;
    }

    setup::archive_pipelines(&connections, &pipelines).await;
    if total.ok == 0 {
        bail!(
            "no command was accepted in the measured window ({} errors); first failure: {}",
            total.errors(),
            total.first_failure.as_deref().unwrap_or("none")
        );
    }
    Ok(total)
}

/// One signed client per [`CLIENTS_PER_CONNECTION`] benchmark clients (at least one), on
/// connections logged in as `nats` says.
pub async fn connect(nats: &Nats, clients: usize) -> anyhow::Result<Vec<Client>> {
    Ok(nats
        .connections(clients)
        .await?
        .into_iter()
        .map(|connection| nats.typed(connection))
        .collect())
}

/// One client: alternates pause and resume on its pipeline until the window ends.
pub async fn toggle(client: Client, pipeline_id: Uuid, window: Window) -> anyhow::Result<PhaseStats> {
    let mut stats = PhaseStats::new(window.length())?;
    let mut next = Toggle::Pause;
    while !window.is_over(Instant::now()) {
        let started = Instant::now();
        let (outcome, _) = next.send(&client, pipeline_id).await;
        let finished = Instant::now();
        if window.measures(finished) {
            match &outcome {
                Outcome::Accepted => stats.record_ok(finished - started),
                Outcome::Rejected(e) => stats.record_rejected(e.code.as_str(), finished - started),
                Outcome::Failed(failure, _) => stats.record_failed(failure.as_str()),
            }
        }
        match &outcome {
            Outcome::Accepted => {}
            Outcome::Rejected(e) => stats.remember_failure(|| format!("{pipeline_id}: {e}")),
            Outcome::Failed(failure, detail) => {
                stats.remember_failure(|| format!("{pipeline_id}: {}: {detail}", failure.as_str()));
                if *failure == Failure::NoResponders {
                    tokio::time::sleep(NO_RESPONDERS_BACKOFF).await;
                }
            }
        }
        next = next.after(&outcome);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(code: ErrorCode) -> Outcome {
        let mut error = ErrorBody::new(flexcore_contracts::ErrorReason::Internal, "no");
        error.code = code;
        Outcome::Rejected(error)
    }

    #[test]
    fn clients_flip_on_success_and_resynchronise_on_invalid_state() {
        assert_eq!(Toggle::Pause.after(&Outcome::Accepted), Toggle::Resume);
        assert_eq!(Toggle::Resume.after(&Outcome::Accepted), Toggle::Pause);
        assert_eq!(Toggle::Pause.after(&rejected(ErrorCode::InvalidState)), Toggle::Resume);
        assert_eq!(Toggle::Pause.after(&rejected(ErrorCode::Unavailable)), Toggle::Pause);
        let timed_out = Outcome::Failed(Failure::TimedOut, String::new());
        assert_eq!(Toggle::Resume.after(&timed_out), Toggle::Resume);
    }
}
