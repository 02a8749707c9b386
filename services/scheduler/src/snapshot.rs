//! The scheduler's snapshot: what a replica has folded from the log ([`State`]) as of one
//! message of the events stream, kept in `FLEXCORE_SCHEDULER` so that a starting replica
//! folds only the events after it instead of the whole log (docs/architecture.md,
//! "Scheduler snapshots").
//!
//! Wire form: the state as JSON, gzip-compressed, cut into chunks that fit a message;
//! chunk `i ≥ 1` on `flexcore.state.scheduler.<i>`, then the [`Manifest`] on chunk 0,
//! written last. The stream keeps the last message of each subject. Every message is
//! signed by the scheduler that wrote it, and its `Nats-Msg-Id` (`<snapshot id>.<i>`,
//! covered by the signature) ties the chunk to its manifest. A reader uses a snapshot only
//! if every part verifies as a scheduler's, belongs to the manifest's snapshot, decodes,
//! and the events stream still holds the manifest's event at the manifest's sequence (the
//! same stream, not one created anew); anything else means replaying the whole log, which
//! is always correct, only slower.

use std::io::Read as _;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream::Stream};
use async_nats::HeaderMap;
use chrono::{DateTime, Utc};
use flexcore_config::SchedulerSettings;
use flexcore_contracts::{envelope, subjects};
use flexcore_security::{Identity, Role, Trust};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::core::{Core, State};

/// The snapshot format this build writes and reads. Raised whenever what [`State`] means
/// changes, so a snapshot of another build is replayed over instead of misread.
pub const FORMAT: u32 = 1;

/// Room left in a message for its headers.
const HEADER_ROOM: usize = 8 * 1024;
/// The largest decompressed snapshot a reader accepts.
const MAX_STATE_BYTES: u64 = 1 << 30;

/// Chunk 0: what the snapshot is and where in the log it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    /// [`FORMAT`] of the writer.
    format: u32,
    /// This snapshot; chunk `i`'s `Nats-Msg-Id` is `<snapshot_id>.<i>`.
    snapshot_id: Uuid,
    /// Chunks after the manifest.
    chunks: u32,
    /// Compressed bytes, all chunks together.
    bytes: u64,
    /// Stream sequence of the last event folded.
    sequence: u64,
    /// `Nats-Msg-Id` (the event id) of the message at `sequence`.
    event_id: String,
    /// When the state was taken.
    taken_at: DateTime<Utc>,
}

/// A replica's state as of the events stream message `sequence`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Stream sequence of the last event folded into `state`.
    pub sequence: u64,
    /// The event id of that message.
    pub event_id: String,
    /// What the log says up to it.
    pub state: State,
}

/// What writing a snapshot took.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// Compressed bytes.
    pub bytes: usize,
    /// Messages (chunks and manifest).
    pub messages: u32,
    /// Milliseconds spent encoding and compressing.
    pub encode_ms: u128,
    /// Milliseconds from the first publish to the last acknowledgement.
    pub publish_ms: u128,
}

/// When a live replica writes a snapshot: once `snapshot_every_events` events have been
/// folded since its start or its last snapshot, at most once per
/// `snapshot_min_interval`, one write at a time, in a task of its own (the state is
/// taken on the replica's loop, encoded and published off it).
#[derive(Debug)]
pub struct Writer {
    every: u64,
    min_interval: Duration,
    since: u64,
    last_written: Option<Instant>,
    sequence: u64,
    event_id: Option<String>,
    in_flight: Option<tokio::task::JoinHandle<()>>,
}

impl Writer {
    /// A writer for a replica that starts folding after stream sequence `sequence`.
    pub fn new(settings: &SchedulerSettings, sequence: u64) -> Self {
        Self {
            every: settings.snapshot_every_events,
            min_interval: settings.snapshot_min_interval,
            since: 0,
            last_written: None,
            sequence,
            event_id: None,
            in_flight: None,
        }
    }

    /// The replica folded (or, unverified, passed over) the message at `sequence`.
    pub fn folded(&mut self, sequence: u64, message: &async_nats::Message) {
        self.since += 1;
        self.sequence = sequence;
        self.event_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(envelope::HEADER_MSG_ID))
            .map(|id| id.as_str().to_owned());
    }

    /// Writes `core`'s state as of the last message folded, if one is due and this
    /// replica is live and the one of its peers that writes snapshots (the owner of the
    /// nil id: one writer at a time, whose parts do not interleave with another's). The
    /// server's `max_payload`, which sizes the chunks, is read only then, not per event.
    pub fn maybe_write(&mut self, js: &jetstream::Context, identity: &Identity, core: &Core) {
        if self.every == 0 || self.since < self.every {
            return;
        }
        if !core.is_live() || !core.members().owns(Uuid::nil()) {
            return;
        }
        if self.in_flight.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        if self.last_written.is_some_and(|at| at.elapsed() < self.min_interval) {
            return;
        }
        let Some(event_id) = self.event_id.clone() else {
            return;
        };
        let snapshot = Snapshot {
            sequence: self.sequence,
            event_id,
            state: core.state(),
        };
        self.since = 0;
        self.last_written = Some(Instant::now());
        let max_payload = js.client().server_info().max_payload;
        let (js, identity) = (js.clone(), identity.clone());
        self.in_flight = Some(tokio::spawn(async move {
            let sequence = snapshot.sequence;
            match write(&js, &identity, snapshot, max_payload).await {
                Ok(w) => tracing::info!(
                    sequence,
                    bytes = w.bytes,
                    messages = w.messages,
                    encode_ms = w.encode_ms as u64,
                    publish_ms = w.publish_ms as u64,
                    "scheduler snapshot written"
                ),
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    sequence,
                    "scheduler snapshot not written; a later one is tried"
                ),
            }
        }));
    }
}

/// Encodes `snapshot` and stores it, signed by `identity`, in messages of at most
/// `max_payload` bytes (the server's limit).
pub async fn write(
    js: &jetstream::Context,
    identity: &Identity,
    snapshot: Snapshot,
    max_payload: usize,
) -> anyhow::Result<Written> {
    let started = Instant::now();
    let Snapshot {
        sequence,
        event_id,
        state,
    } = snapshot;
    let data = tokio::task::spawn_blocking(move || encode(&state)).await??;
    let encode_ms = started.elapsed().as_millis();
    let chunk_size = max_payload.saturating_sub(HEADER_ROOM).max(HEADER_ROOM);
    let parts: Vec<&[u8]> = data.chunks(chunk_size).collect();
    let manifest = Manifest {
        format: FORMAT,
        snapshot_id: Uuid::new_v4(),
        chunks: u32::try_from(parts.len())?,
        bytes: data.len() as u64,
        sequence,
        event_id,
        taken_at: Utc::now(),
    };
    let published = Instant::now();
    let mut acks = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let index = u32::try_from(i + 1)?;
        acks.push(publish(js, identity, manifest.snapshot_id, index, part.to_vec()).await?);
    }
    for ack in acks {
        ack.await?;
    }
    // The manifest last: until it is stored, readers find the previous snapshot's
    // manifest, whose chunks no longer match it, and replay the whole log.
    publish(js, identity, manifest.snapshot_id, 0, serde_json::to_vec(&manifest)?)
        .await?
        .await?;
    Ok(Written {
        bytes: data.len(),
        messages: manifest.chunks + 1,
        encode_ms,
        publish_ms: published.elapsed().as_millis(),
    })
}

async fn publish(
    js: &jetstream::Context,
    identity: &Identity,
    snapshot_id: Uuid,
    index: u32,
    body: Vec<u8>,
) -> anyhow::Result<jetstream::context::PublishAckFuture> {
    let subject = subjects::scheduler_state(index);
    let mut headers = HeaderMap::new();
    headers.insert(envelope::HEADER_MSG_ID, msg_id(snapshot_id, index).as_str());
    identity.sign(&subject, &mut headers, &body);
    Ok(js.publish_with_headers(subject, headers, body.into()).await?)
}

fn msg_id(snapshot_id: Uuid, index: u32) -> String {
    format!("{snapshot_id}.{index}")
}

fn encode(state: &State) -> anyhow::Result<Vec<u8>> {
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    serde_json::to_writer(&mut gzip, state)?;
    Ok(gzip.finish()?)
}

fn decode(data: &[u8]) -> anyhow::Result<State> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut json)?;
    anyhow::ensure!(
        json.len() as u64 <= MAX_STATE_BYTES,
        "larger than {MAX_STATE_BYTES} bytes decompressed"
    );
    Ok(serde_json::from_slice(&json)?)
}

/// The snapshot to start from: `Ok(None)` when there is none, `Err` (the reason, for the
/// log) when there is one this replica cannot use. Either way the caller replays the log
/// from its start.
pub async fn load(js: &jetstream::Context, trust: &Trust, events: &Stream) -> anyhow::Result<Option<Snapshot>> {
    let Ok(stream) = js.get_stream(subjects::SCHEDULER_STATE_STREAM).await else {
        anyhow::bail!(
            "there is no stream {} (`flexcore-command setup` creates it)",
            subjects::SCHEDULER_STATE_STREAM
        );
    };
    let manifest_message = match stream
        .get_last_raw_message_by_subject(&subjects::scheduler_state(0))
        .await
    {
        Ok(message) => message,
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let body = verified(trust, &manifest_message, None)?;
    let manifest: Manifest = serde_json::from_slice(&body)?;
    verified(trust, &manifest_message, Some((manifest.snapshot_id, 0)))?;
    anyhow::ensure!(
        manifest.format == FORMAT,
        "it has format {}, this build reads {FORMAT}",
        manifest.format
    );
    let mut data = Vec::with_capacity(usize::try_from(manifest.bytes).unwrap_or(0).min(1 << 28));
    for index in 1..=manifest.chunks {
        let chunk = stream
            .get_last_raw_message_by_subject(&subjects::scheduler_state(index))
            .await?;
        data.extend_from_slice(&verified(trust, &chunk, Some((manifest.snapshot_id, index)))?);
    }
    anyhow::ensure!(
        data.len() as u64 == manifest.bytes,
        "its chunks hold {} bytes, its manifest says {}",
        data.len(),
        manifest.bytes
    );
    let at = events.get_raw_message(manifest.sequence).await.map_err(|e| {
        anyhow::anyhow!(
            "the events stream no longer holds message {} it was taken at: {e}",
            manifest.sequence
        )
    })?;
    let event_id = at.headers.get(envelope::HEADER_MSG_ID).map(|v| v.as_str().to_owned());
    anyhow::ensure!(
        event_id.as_deref() == Some(manifest.event_id.as_str()),
        "message {} of the events stream is not the event it was taken at (a different stream)",
        manifest.sequence
    );
    let state = tokio::task::spawn_blocking(move || decode(&data)).await??;
    Ok(Some(Snapshot {
        sequence: manifest.sequence,
        event_id: manifest.event_id,
        state,
    }))
}

/// The body of a snapshot message signed by a scheduler, whose `Nats-Msg-Id` is that of
/// chunk `index` of `snapshot_id` (the manifest's is checked again once it is read).
fn verified(
    trust: &Trust,
    message: &async_nats::jetstream::message::StreamMessage,
    part_of: Option<(Uuid, u32)>,
) -> anyhow::Result<bytes::Bytes> {
    trust
        .verify(
            message.subject.as_str(),
            Some(&message.headers),
            &message.payload,
            &[Role::Scheduler],
            None,
        )
        .map_err(|e| anyhow::anyhow!("{} is not signed by a scheduler: {e}", message.subject))?;
    let id = message.headers.get(envelope::HEADER_MSG_ID).map(|v| v.as_str());
    match part_of {
        Some((snapshot_id, index)) => anyhow::ensure!(
            id == Some(msg_id(snapshot_id, index).as_str()),
            "{} belongs to another snapshot than its manifest (one was being written)",
            message.subject
        ),
        None => anyhow::ensure!(id.is_some(), "{} has no Nats-Msg-Id", message.subject),
    }
    Ok(message.payload.clone())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_state_survives_its_wire_form_and_a_damaged_one_does_not_decode() {
        let state = State {
            schedules: Vec::new(),
            pipelines: vec![crate::core::PipelineState {
                id: Uuid::from_u128(1),
                status: flexcore_contracts::lifecycle::PipelineStatus::Paused,
                active: vec![Uuid::from_u128(2)],
            }],
            runs: Vec::new(),
        };
        let data = encode(&state).unwrap();
        assert_eq!(decode(&data).unwrap(), state);
        let mut damaged = data.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0xff;
        assert!(decode(&damaged).is_err());
        assert!(decode(&data[..data.len() - 4]).is_err());
    }
}
