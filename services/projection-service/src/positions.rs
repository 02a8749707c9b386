//! Where each projection stands, as this process knows it: the leader updates it after
//! every commit and announces it on `flexcore.sys.projection.<name>.position`; every
//! replica listens and also refreshes from `read.projections` once a second, so a
//! `min_position` wait ends as soon as the projection has caught up.

use std::collections::BTreeMap;
use std::time::Duration;

use flexcore_contracts::subjects;
use flexcore_eventstore::Checkpoint;
use flexcore_security::{Identity, Role, Trust, PRESENCE_FRESHNESS};
use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::ProjectionError;
use crate::projection::Kind;

/// The known checkpoint of every projection.
#[derive(Debug)]
pub struct Positions {
    senders: BTreeMap<Kind, watch::Sender<Checkpoint>>,
}

impl Default for Positions {
    fn default() -> Self {
        Self {
            senders: Kind::ALL
                .into_iter()
                .map(|k| (k, watch::Sender::new(Checkpoint::default())))
                .collect(),
        }
    }
}

impl Positions {
    /// The latest known checkpoint of `kind`.
    pub fn get(&self, kind: Kind) -> Checkpoint {
        self.senders.get(&kind).map(|s| *s.borrow()).unwrap_or_default()
    }

    /// Moves `kind` forward to `checkpoint` (never back).
    pub fn advance(&self, kind: Kind, checkpoint: Checkpoint) {
        if let Some(sender) = self.senders.get(&kind) {
            sender.send_if_modified(|current| {
                if checkpoint > *current {
                    *current = checkpoint;
                    true
                } else {
                    false
                }
            });
        }
    }

    /// Waits until `kind` has reached `target`; false when `deadline` came first.
    pub async fn wait(&self, kind: Kind, target: Checkpoint, deadline: Instant) -> bool {
        let Some(sender) = self.senders.get(&kind) else {
            return false;
        };
        let mut rx = sender.subscribe();
        let reached = tokio::time::timeout_at(deadline, rx.wait_for(|c| *c >= target)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Loads every projection's committed checkpoint from `read.projections`.
    pub async fn refresh(&self, pool: &PgPool) -> Result<(), ProjectionError> {
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT name, transaction_id::text::bigint, global_position FROM read.projections")
                .fetch_all(pool)
                .await?;
        for (name, tx, pos) in rows {
            if let Some(kind) = Kind::parse(&name) {
                self.advance(kind, checkpoint(tx, pos));
            }
        }
        Ok(())
    }
}

/// A checkpoint from its database columns.
pub fn checkpoint(transaction_id: i64, global_position: i64) -> Checkpoint {
    Checkpoint {
        transaction_id: u64::try_from(transaction_id).unwrap_or_default(),
        global_position: u64::try_from(global_position).unwrap_or_default(),
    }
}

/// Announces a leader's new checkpoint to every replica, signed by this replica's identity.
pub async fn announce(nats: &async_nats::Client, identity: &Identity, kind: Kind, checkpoint: Checkpoint) {
    let Ok(body) = serde_json::to_vec(&checkpoint) else {
        return;
    };
    let subject = subjects::projection_position(kind.name());
    let headers = identity.signed_headers(&subject, &body);
    if let Err(error) = nats.publish_with_headers(subject, headers, body.into()).await {
        tracing::debug!(%error, "position announcement not sent");
    }
}

/// Follows announcements and refreshes from Postgres until `shutdown`.
pub async fn follow(
    positions: std::sync::Arc<Positions>,
    nats: async_nats::Client,
    pool: PgPool,
    trust: Trust,
    shutdown: CancellationToken,
) -> Result<(), ProjectionError> {
    let mut announcements = nats
        .subscribe(subjects::PROJECTION_POSITIONS_WILDCARD)
        .await
        .map_err(ProjectionError::nats)?;
    let mut refresh = tokio::time::interval(Duration::from_secs(1));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            message = announcements.next() => {
                let Some(message) = message else { return Err(ProjectionError::nats("position subscription ended")) };
                // Only a projection replica's recent announcement: a forged one would have
                // queries with `min_position` answered from a view that is behind.
                if let Err(error) = trust.verify_message(&message, &[Role::Projection], Some(PRESENCE_FRESHNESS)) {
                    tracing::debug!(%error, subject = %message.subject, "unverified position announcement ignored");
                    continue;
                }
                let name = message.subject.split('.').nth(3).unwrap_or_default();
                if let (Some(kind), Ok(cp)) = (Kind::parse(name), serde_json::from_slice::<Checkpoint>(&message.payload)) {
                    positions.advance(kind, cp);
                }
            }
            _ = refresh.tick() => {
                if let Err(error) = positions.refresh(&pool).await {
                    tracing::debug!(%error, "refreshing projection positions failed");
                }
            }
        }
    }
}
