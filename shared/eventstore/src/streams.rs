//! JetStream streams, created or updated idempotently at start-up so every replica may
//! run it and settings changed in config take effect on the next start.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use flexcore_contracts::subjects;

use crate::error::StoreError;

/// Settings of the events stream.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Age after which events leave the stream (`None`: kept forever). Postgres stays
    /// the source of truth; rebuilds read from it.
    pub events_max_age: Option<Duration>,
    /// Replicas (1 for a single server; 3 on a cluster).
    pub replicas: usize,
    /// Window in which `Nats-Msg-Id` de-duplicates re-published events.
    pub duplicate_window: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            events_max_age: None,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// The configuration of `FLEXCORE_EVENTS`.
pub fn events_stream_config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: subjects::EVENTS_STREAM.to_owned(),
        description: Some("FlexCore domain events, relayed from the Postgres event store in global order".to_owned()),
        subjects: vec![subjects::EVENTS_WILDCARD.to_owned()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: settings.events_max_age.unwrap_or_default(),
        duplicate_window: settings.duplicate_window,
        num_replicas: settings.replicas.max(1),
        allow_direct: true,
        ..Default::default()
    }
}

/// The configuration of `FLEXCORE_WORK`: a work queue (a message is removed once a
/// runner acknowledges it), de-duplicated per run attempt.
pub fn work_stream_config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: subjects::WORK_STREAM.to_owned(),
        description: Some("FlexCore run attempts waiting for a runner".to_owned()),
        subjects: vec![subjects::WORK_WILDCARD.to_owned()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: settings.duplicate_window,
        num_replicas: settings.replicas.max(1),
        ..Default::default()
    }
}

/// Creates the streams that do not exist and updates those whose settings differ.
pub async fn ensure_streams(js: &jetstream::Context, settings: &StreamSettings) -> Result<(), StoreError> {
    ensure(js, events_stream_config(settings)).await?;
    ensure(js, work_stream_config(settings)).await
}

async fn ensure(js: &jetstream::Context, config: stream::Config) -> Result<(), StoreError> {
    let name = config.name.clone();
    match js.get_stream(&name).await {
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|e| StoreError::Nats(format!("stream {name} info: {e}")))?;
            if differs(&info.config, &config) {
                js.update_stream(&config)
                    .await
                    .map_err(|e| StoreError::Nats(format!("update stream {name}: {e}")))?;
                tracing::info!(stream = %name, "stream settings updated");
            }
            Ok(())
        }
        Err(_) => match js.create_stream(config.clone()).await {
            Ok(_) => {
                tracing::info!(stream = %name, "stream created");
                Ok(())
            }
            // Another replica created it between our look-up and create.
            Err(e) if js.get_stream(&name).await.is_ok() => {
                tracing::debug!(stream = %name, error = %e, "stream created concurrently");
                Ok(())
            }
            Err(e) => Err(StoreError::Nats(format!("create stream {name}: {e}"))),
        },
    }
}

fn differs(current: &stream::Config, wanted: &stream::Config) -> bool {
    current.subjects != wanted.subjects
        || current.max_age != wanted.max_age
        || current.duplicate_window != wanted.duplicate_window
        || current.num_replicas != wanted.num_replicas
        || current.description != wanted.description
        || current.allow_direct != wanted.allow_direct
}
