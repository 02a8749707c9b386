//! Where each projection stands, as this process knows it: the leader updates it after
//! every commit and announces it on `flexcore.sys.projection.<name>.position`; every
//! replica listens and also refreshes from `read.projections` once a second, so a
//! `min_position` wait ends as soon as the projection has caught up.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Changes to the read models this replica made without moving a checkpoint
    /// ([`Self::changed_in_place`]).
    in_place: AtomicU64,
}

impl Default for Positions {
    fn default() -> Self {
        Self {
            senders: Kind::ALL
                .into_iter()
                .map(|k| (k, watch::Sender::new(Checkpoint::default())))
                .collect(),
            in_place: AtomicU64::new(0),
        }
    }
}

/// What this replica knew of the read models at one moment: every projection's
/// checkpoint and how many changes it had made in place. Equal stamps: no event applied
/// and nothing changed in place in between, as far as this replica knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    checkpoints: Vec<Checkpoint>,
    in_place: u64,
}

impl Stamp {
    /// The checkpoint of `kind` in this stamp.
    pub fn get(&self, kind: Kind) -> Checkpoint {
        Kind::ALL
            .iter()
            .position(|k| *k == kind)
            .and_then(|i| self.checkpoints.get(i).copied())
            .unwrap_or_default()
    }

    /// A stamp of the given checkpoints (in [`Kind::ALL`] order), for tests.
    #[cfg(test)]
    pub fn of(checkpoints: Vec<Checkpoint>, in_place: u64) -> Self {
        Self { checkpoints, in_place }
    }
}

impl Positions {
    /// The latest known checkpoint of `kind`.
    pub fn get(&self, kind: Kind) -> Checkpoint {
        self.senders.get(&kind).map(|s| *s.borrow()).unwrap_or_default()
    }

    /// The latest known checkpoint of every projection and the changes made in place: it
    /// changes whenever any projection applies an event.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            in_place: self.in_place.load(Ordering::Acquire),
            checkpoints: Kind::ALL.into_iter().map(|kind| self.get(kind)).collect(),
        }
    }

    /// Records a committed change to the read models that moved no checkpoint (derived
    /// columns recomputed, a rebuild swapped in at the live checkpoint): pages read
    /// before it are not answered again here.
    pub fn changed_in_place(&self) {
        self.in_place.fetch_add(1, Ordering::AcqRel);
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
                if let Some((kind, checkpoint)) = news(&positions, &trust, &message) {
                    positions.advance(kind, checkpoint);
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

/// What an announcement teaches: the projection and its checkpoint, if that is ahead of
/// the known one and the announcement is a projection replica's, signed recently (a
/// forged one would have queries with `min_position` answered from a view that is
/// behind). One that is not ahead (the leader's own, an old one) is dropped before the
/// signature check, which costs more than the rest of the leader's work for a small batch.
fn news(positions: &Positions, trust: &Trust, message: &async_nats::Message) -> Option<(Kind, Checkpoint)> {
    let kind = Kind::parse(message.subject.split('.').nth(3).unwrap_or_default())?;
    let checkpoint: Checkpoint = serde_json::from_slice(&message.payload).ok()?;
    if checkpoint <= positions.get(kind) {
        return None;
    }
    if let Err(error) = trust.verify_message(message, &[Role::Projection], Some(PRESENCE_FRESHNESS)) {
        tracing::debug!(%error, subject = %message.subject, "unverified position announcement ignored");
        return None;
    }
    Some((kind, checkpoint))
}

#[cfg(test)]
mod tests {
    use flexcore_security::kit::Kit;

    use super::*;

    #[test]
    fn a_stamp_changes_with_any_checkpoint_and_any_change_in_place() {
        let positions = Positions::default();
        let first = positions.stamp();
        assert_eq!(positions.stamp(), first);
        positions.advance(Kind::Schedules, checkpoint(5, 9));
        let advanced = positions.stamp();
        assert_ne!(advanced, first);
        assert_eq!(advanced.get(Kind::Schedules), checkpoint(5, 9));
        assert_eq!(advanced.get(Kind::Pipelines), Checkpoint::default());
        // Not moving back: the same stamp.
        positions.advance(Kind::Schedules, checkpoint(4, 8));
        assert_eq!(positions.stamp(), advanced);
        positions.changed_in_place();
        assert_ne!(positions.stamp(), advanced);
        assert_eq!(positions.stamp().get(Kind::Schedules), checkpoint(5, 9));
    }

    fn message(subject: &str, body: Vec<u8>, headers: async_nats::HeaderMap) -> async_nats::Message {
        async_nats::Message {
            subject: subject.into(),
            reply: None,
            length: body.len(),
            payload: body.into(),
            headers: Some(headers),
            status: None,
            description: None,
        }
    }

    #[test]
    fn only_a_projection_replicas_announcement_of_a_newer_checkpoint_counts() {
        let kit = Kit::generate(&[("projection", Role::Projection), ("app", Role::Client)]);
        let trust = kit.trust().unwrap();
        let identity = |name: &str| Identity::from_seed(kit.seed(name).unwrap(), &trust).unwrap();
        let (projection, app) = (identity("projection"), identity("app"));
        let positions = Positions::default();
        let known = Checkpoint {
            transaction_id: 5,
            global_position: 10,
        };
        positions.advance(Kind::Runs, known);
        let subject = subjects::projection_position("runs");
        let signed = |who: &Identity, at: Checkpoint| {
            let body = serde_json::to_vec(&at).unwrap();
            let headers = who.signed_headers(&subject, &body);
            message(&subject, body, headers)
        };
        let ahead = Checkpoint {
            transaction_id: 6,
            global_position: 11,
        };
        assert_eq!(
            news(&positions, &trust, &signed(&projection, ahead)),
            Some((Kind::Runs, ahead))
        );
        assert_eq!(
            news(&positions, &trust, &signed(&projection, known)),
            None,
            "nothing new"
        );
        assert_eq!(
            news(&positions, &trust, &signed(&app, ahead)),
            None,
            "not a projection's"
        );
        let unsigned = message(
            &subject,
            serde_json::to_vec(&ahead).unwrap(),
            async_nats::HeaderMap::new(),
        );
        assert_eq!(news(&positions, &trust, &unsigned), None, "unsigned");
        let mut altered = signed(&projection, ahead);
        altered.payload = serde_json::to_vec(&Checkpoint {
            transaction_id: 9,
            global_position: 99,
        })
        .unwrap()
        .into();
        assert_eq!(news(&positions, &trust, &altered), None, "altered after signing");
    }
}
