//! What an attempt runs, read from the event stream (never from the database): the
//! pinned definition from `run.requested`, each step plugin's limits and grants from
//! `plugin.registered`, the bookmark from this attempt's `run.claimed`.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use flexcore_contracts::events::{PluginRegistered, RunClaimed, RunRequested};
use flexcore_contracts::{subjects, EventEnvelope};
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// Why the definition could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// An event the attempt needs is not (yet) on the stream.
    #[error("{0} is not on {stream} (relay behind, or beyond the stream's retention)", stream = subjects::EVENTS_STREAM)]
    Missing(String),
    /// NATS failed.
    #[error("reading {subject}: {message}")]
    Nats {
        /// The subject read.
        subject: String,
        /// The error.
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
    subject: &str,
) -> Result<Option<T>, DefinitionError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => {
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
            message: e.to_string(),
        }),
    }
}

/// Reads the attempt's definition, waiting (bounded) for the relay to publish the claim.
pub async fn load(
    js: &jetstream::Context,
    run_id: Uuid,
    attempt: u32,
    wait: Duration,
) -> Result<AttemptDefinition, DefinitionError> {
    let stream = js
        .get_stream(subjects::EVENTS_STREAM)
        .await
        .map_err(|e| DefinitionError::Nats {
            subject: subjects::EVENTS_STREAM.to_owned(),
            message: e.to_string(),
        })?;
    let deadline = Instant::now() + wait;
    let claimed_subject = subjects::event("run", run_id, "run.claimed");
    let claimed = loop {
        match last::<RunClaimed>(&stream, &claimed_subject).await? {
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
    let requested: RunRequested = last(&stream, &requested_subject)
        .await?
        .ok_or_else(|| DefinitionError::Missing(format!("the request of run {run_id}")))?;
    let mut plugins = Vec::with_capacity(requested.definition.steps.len());
    for step in &requested.definition.steps {
        let subject = subjects::event("plugin", step.plugin_id, "plugin.registered");
        let plugin: PluginRegistered = last(&stream, &subject)
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
