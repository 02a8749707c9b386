//! Removes work items that linger in `FLEXCORE_WORK` after their run moved on.
//!
//! A work item leaves the work-queue stream when a runner acknowledges it. Some never are,
//! and stay stored where the runners' consumer will not hand them out again: after a
//! `kill -9` of nats-server 2.9, acknowledged items come back below the consumer's ack
//! floor (nats-server ≥ 2.10 persists deletes with tombstones and does not do this), and
//! items that reached MaxDeliver stay too. The stream's message count (the "queue depth" a
//! dashboard shows) then never returns to 0. Now and then the janitor looks at the stored
//! items the consumer has already delivered and deletes each whose attempt is moot: its
//! run is final, awaits a retry (another item), or a later attempt is current, as the
//! runs view says. The view may lag but never runs ahead, so a moot verdict is safe even
//! for an item a runner still holds. Everything else stays: an attempt in progress, or
//! one that no runner can take any more, which the run's timeout ends.
//!
//! Outstanding work is the consumer's `num_pending + num_ack_pending` (what `flexctl
//! status` shows), never the stream's message count.

use std::time::Duration;

use async_nats::jetstream;
use flexcore_client::Retry;
use flexcore_contracts::views::RunView;
use flexcore_contracts::work::WorkItem;
use flexcore_contracts::{subjects, ErrorCode};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::CONSUMER;

/// First look after start, then this often.
const FIRST: Duration = Duration::from_secs(5);
const EVERY: Duration = Duration::from_secs(60);
/// Most items examined in one pass.
const PER_PASS: u64 = 1000;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Delivered items examined.
    pub examined: u64,
    /// Items deleted (their attempt was moot).
    pub deleted: u64,
    /// Items left (in progress, their run still waits for that attempt, or is not known yet).
    pub kept: u64,
}

/// Runs passes until `shutdown`.
pub async fn run(js: jetstream::Context, commands: flexcore_client::Client, shutdown: CancellationToken) {
    let mut wait = FIRST;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = EVERY;
        match sweep(&js, &commands).await {
            Ok(swept) if swept.deleted > 0 => tracing::info!(?swept, "lingering work items deleted"),
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "work janitor pass failed; next pass later"),
        }
    }
}

/// One pass: the stored items the consumer has delivered, each deleted when moot.
pub async fn sweep(js: &jetstream::Context, commands: &flexcore_client::Client) -> anyhow::Result<Swept> {
    let mut stream = js.get_stream(subjects::WORK_STREAM).await?;
    let first = stream.info().await?.state.first_sequence;
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .get_consumer(CONSUMER)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Items after this one have not been handed to a runner yet: they wait their turn.
    let delivered = consumer.info().await?.delivered.stream_sequence;
    let mut swept = Swept::default();
    let mut next = first;
    while next <= delivered && swept.examined < PER_PASS {
        // The next stored item at or after `next` (acknowledged items leave gaps).
        let Ok(message) = stream
            .raw_message_builder()
            .sequence(next)
            .next_by_subject(subjects::WORK_WILDCARD)
            .send()
            .await
        else {
            break;
        };
        let sequence = message.sequence;
        if sequence > delivered {
            break;
        }
        next = sequence + 1;
        swept.examined += 1;
        // Not a work item (published by someone else): nothing can take it.
        let item = serde_json::from_slice::<WorkItem>(&message.payload).ok();
        let moot = match &item {
            Some(item) => moot(commands, item).await?,
            None => true,
        };
        if moot {
            // Another runner's janitor may have deleted it a moment ago.
            if stream.delete_message(sequence).await.is_ok() {
                swept.deleted += 1;
            }
        } else if let Some(item) = item {
            swept.kept += 1;
            tracing::debug!(run_id = %item.run_id, attempt = item.attempt, sequence, "delivered work item kept: its attempt is current");
        }
    }
    Ok(swept)
}

/// Whether nothing can come of `item`: its run is final, its attempt failed (the retry is
/// another item), or a later attempt is current.
async fn moot(commands: &flexcore_client::Client, item: &WorkItem) -> anyhow::Result<bool> {
    let once = Retry::once();
    match commands.query_raw("run.get", &json!({"id": item.run_id}), &once).await {
        Ok(ok) => {
            let run: RunView = ok.data.decode()?;
            // A failed attempt awaiting its retry gets a new item for the next attempt.
            let over = matches!(
                run.state.as_str(),
                "succeeded" | "failed" | "cancelled" | "timed_out" | "awaiting_retry"
            );
            Ok(over || run.attempt > item.attempt)
        }
        // Not projected yet: keep it for the next pass.
        Err(e) if e.is(ErrorCode::NotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
