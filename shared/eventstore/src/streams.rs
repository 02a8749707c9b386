//! The system's JetStream streams: the event log, the work queue, the run logs and the
//! plugin bucket.
//!
//! [`setup`] creates them and applies changed settings; it is idempotent, so it may run
//! on every deploy, and it is what the `setup` identity (`flexcore-command setup`) does:
//! no service creates or changes a stream (their NATS users may not). A service started
//! before setup has run waits for its streams (`flexcore_service::streams::wait_for`).

use std::time::Duration;

use async_nats::jetstream::{self, object_store, stream};
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
    /// Age after which run logs leave `FLEXCORE_LOGS`.
    pub logs_max_age: Duration,
    /// Bound of the plugin bucket, all modules together (`None`: unbounded).
    pub plugins_max_bytes: Option<u64>,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            events_max_age: None,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            logs_max_age: Duration::from_secs(7 * 86_400),
            plugins_max_bytes: None,
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

/// The configuration of `FLEXCORE_LOGS`: plugin log lines, kept for a while.
pub fn logs_stream_config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: subjects::LOGS_STREAM.to_owned(),
        description: Some("FlexCore run logs (plugin stderr, scrubbed of secrets)".to_owned()),
        subjects: vec![subjects::LOGS_WILDCARD.to_owned()],
        max_age: settings.logs_max_age,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas.max(1),
        ..Default::default()
    }
}

/// The configuration of `FLEXCORE_SCHEDULER`: the scheduler's latest snapshot, kept as
/// the last message of each chunk's subject.
pub fn scheduler_state_stream_config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: subjects::SCHEDULER_STATE_STREAM.to_owned(),
        description: Some(
            "FlexCore scheduler snapshot: where a replica starts instead of replaying the whole log".to_owned(),
        ),
        subjects: vec![subjects::SCHEDULER_STATE_WILDCARD.to_owned()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_messages_per_subject: 1,
        num_replicas: settings.replicas.max(1),
        ..Default::default()
    }
}

/// Creates the event and work streams that do not exist and updates those whose settings
/// differ.
pub async fn ensure_streams(js: &jetstream::Context, settings: &StreamSettings) -> Result<(), StoreError> {
    ensure(js, events_stream_config(settings)).await?;
    ensure(js, work_stream_config(settings)).await
}

/// Everything [`ensure_streams`] does, and the same for the logs stream and the plugin
/// bucket: what the `setup` identity runs.
pub async fn setup(js: &jetstream::Context, settings: &StreamSettings) -> Result<(), StoreError> {
    ensure_streams(js, settings).await?;
    ensure(js, logs_stream_config(settings)).await?;
    ensure(js, scheduler_state_stream_config(settings)).await?;
    let bucket_stream = format!("OBJ_{}", flexcore_plugin_store::BUCKET);
    let max_bytes = settings
        .plugins_max_bytes
        .map_or(-1, |bytes| i64::try_from(bytes).unwrap_or(i64::MAX));
    match js.get_stream(&bucket_stream).await {
        Err(_) => {
            js.create_object_store(object_store::Config {
                bucket: flexcore_plugin_store::BUCKET.to_owned(),
                description: Some("FlexCore plugin modules, named by sha256 digest".to_owned()),
                storage: stream::StorageType::File,
                num_replicas: settings.replicas.max(1),
                max_bytes,
                ..Default::default()
            })
            .await
            .map_err(|e| StoreError::nats(format!("create bucket {}", flexcore_plugin_store::BUCKET), e))?;
            tracing::info!(stream = %bucket_stream, "plugin bucket created");
        }
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|e| StoreError::nats(format!("stream {bucket_stream} info"), e))?;
            if info.config.max_bytes != max_bytes || info.config.num_replicas != settings.replicas.max(1) {
                let mut config = info.config.clone();
                config.max_bytes = max_bytes;
                config.num_replicas = settings.replicas.max(1);
                js.update_stream(&config)
                    .await
                    .map_err(|e| StoreError::nats(format!("update stream {bucket_stream}"), e))?;
                tracing::info!(stream = %bucket_stream, "plugin bucket settings updated");
            }
        }
    }
    Ok(())
}

/// Whether the streams' settings are what `settings` asks for: a difference is logged
/// (setup applies it), not fixed, as no service may change a stream.
pub async fn check(js: &jetstream::Context, settings: &StreamSettings) {
    for wanted in [events_stream_config(settings), work_stream_config(settings)] {
        let Ok(mut stream) = js.get_stream(&wanted.name).await else {
            continue;
        };
        if let Ok(info) = stream.info().await {
            if differs(&info.config, &wanted) {
                tracing::warn!(stream = %wanted.name, "stream settings differ from the configuration: run `flexcore-command setup` to apply them");
            }
        }
    }
}

async fn ensure(js: &jetstream::Context, config: stream::Config) -> Result<(), StoreError> {
    let name = config.name.clone();
    match js.get_stream(&name).await {
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|e| StoreError::nats(format!("stream {name} info"), e))?;
            if differs(&info.config, &config) {
                js.update_stream(&config)
                    .await
                    .map_err(|e| StoreError::nats(format!("update stream {name}"), e))?;
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
            Err(e) => Err(StoreError::nats(format!("create stream {name}"), e)),
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
        // The server reports an unset per-subject limit as -1, the client's default is 0.
        || current.max_messages_per_subject.max(0) != wanted.max_messages_per_subject.max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_per_subject_limit_as_the_server_reports_it_is_no_difference() {
        let settings = StreamSettings::default();
        for wanted in [
            events_stream_config(&settings),
            scheduler_state_stream_config(&settings),
        ] {
            let mut reported = wanted.clone();
            if reported.max_messages_per_subject == 0 {
                reported.max_messages_per_subject = -1;
            }
            assert!(!differs(&reported, &wanted), "{}", wanted.name);
            reported.max_messages_per_subject = 5;
            assert!(differs(&reported, &wanted), "{}", wanted.name);
        }
    }
}
