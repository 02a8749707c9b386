//! What an attempt runs, read from the event stream (never from the database): the
//! pinned definition from `run.requested`, each step plugin's limits and grants from
//! `plugin.registered`, the bookmark from this attempt's `run.claimed` — each message
//! only if the command service's relay signed it (whoever else could publish into the
//! stream must not choose a plugin's grants).

use std::time::{Duration, Instant};

use async_nats::jetstream;
use flexcore_contracts::events::{PluginRegistered, RunClaimed, RunRequested};
use flexcore_contracts::{subjects, EventEnvelope};
use flexcore_security::{Role, Trust};
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// Why the definition could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// An event the attempt needs is not (yet) on the stream.
    #[error("{0} is not on {stream} (relay behind, or beyond the stream's retention)", stream = subjects::EVENTS_STREAM)]
    Missing(String),
    /// NATS failed (the client's error kept as it came).
    #[error("reading {subject}: {cause}")]
    Nats {
        /// The subject read.
        subject: String,
        /// The async-nats error.
        cause: async_nats::Error,
    },
    /// The event was not signed by the command service (forged into the stream).
    #[error("event {subject} is not signed by the command service: {message}")]
    Unverified {
        /// The subject read.
        subject: String,
        /// Why.
        message: String,
    },
    /// The event does not decode.
    #[error("event {subject} is unreadable: {message}")]
    Corrupt {
        /// The subject read.
        subject: String,
        /// The error.
        message: String,
    },
}

/// Everything an attempt needs to know besides module bytes.
#[derive(Debug, Clone)]
pub struct AttemptDefinition {
    /// The request (pinned definition).
    pub requested: RunRequested,
    /// The claim (bookmark to resume from).
    pub claimed: RunClaimed,
    /// Each step's plugin registration, in step order.
    pub plugins: Vec<PluginRegistered>,
}

async fn last<T: DeserializeOwned>(
    stream: &jetstream::stream::Stream,
    trust: &Trust,
    subject: &str,
) -> Result<Option<T>, DefinitionError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => {
            trust
                .verify(
                    message.subject.as_str(),
                    Some(&message.headers),
                    &message.payload,
                    &[Role::Command],
                    None,
                )
                .map_err(|e| DefinitionError::Unverified {
                    subject: subject.to_owned(),
                    message: e.to_string(),
                })?;
            let corrupt = |e: serde_json::Error| DefinitionError::Corrupt {
                subject: subject.to_owned(),
                message: e.to_string(),
            };
            let envelope: EventEnvelope = serde_json::from_slice(&message.payload).map_err(corrupt)?;
            envelope.data.decode().map(Some).map_err(corrupt)
        }
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(DefinitionError::Nats {
            subject: subject.to_owned(),
            cause: e.into(),
        }),
    }
}

/// Pause before reading again after a NATS error.
const NATS_RETRY: Duration = Duration::from_millis(200);

/// [`last`], read again after a NATS error (a reconnection, a server restart) until
/// `deadline`: a transient failure must not cost the run an attempt.
async fn last_retrying<T: DeserializeOwned>(
    stream: &jetstream::stream::Stream,
    trust: &Trust,
    subject: &str,
    deadline: Instant,
) -> Result<Option<T>, DefinitionError> {
    loop {
        match last(stream, trust, subject).await {
            Err(DefinitionError::Nats { .. }) if Instant::now() < deadline => tokio::time::sleep(NATS_RETRY).await,
            other => return other,
        }
    }
}

/// Reads the attempt's definition, waiting (bounded) for the relay to publish the claim
/// and through NATS errors.
pub async fn load(
    js: &jetstream::Context,
    trust: &Trust,
    run_id: Uuid,
    attempt: u32,
    wait: Duration,
) -> Result<AttemptDefinition, DefinitionError> {
    let deadline = Instant::now() + wait;
    let stream = loop {
        match js.get_stream(subjects::EVENTS_STREAM).await {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(NATS_RETRY).await,
            Err(e) => {
                return Err(DefinitionError::Nats {
                    subject: subjects::EVENTS_STREAM.to_owned(),
                    cause: e.into(),
                })
            }
        }
    };
    let claimed_subject = subjects::event("run", run_id, "run.claimed");
    let claimed = loop {
        match last_retrying::<RunClaimed>(&stream, trust, &claimed_subject, deadline).await? {
            Some(c) if c.attempt == attempt => break c,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            _ => {
                return Err(DefinitionError::Missing(format!(
                    "the claim of attempt {attempt} of run {run_id}"
                )))
            }
        }
    };
    let requested_subject = subjects::event("run", run_id, "run.requested");
    let requested: RunRequested = last_retrying(&stream, trust, &requested_subject, deadline)
        .await?
        .ok_or_else(|| DefinitionError::Missing(format!("the request of run {run_id}")))?;
    let mut plugins = Vec::with_capacity(requested.definition.steps.len());
    for step in &requested.definition.steps {
        let subject = subjects::event("plugin", step.plugin_id, "plugin.registered");
        let plugin: PluginRegistered = last_retrying(&stream, trust, &subject, deadline)
            .await?
            .ok_or_else(|| DefinitionError::Missing(format!("the registration of plugin {}", step.plugin)))?;
        plugins.push(plugin);
    }
    Ok(AttemptDefinition {
        requested,
        claimed,
        plugins,
    })
}
