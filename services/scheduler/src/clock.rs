//! The scheduler's notion of now: the system clock in production, a manual clock in tests so
//! that minutes of schedule time pass in milliseconds and DST days can be visited at will.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// Where "now" comes from.
#[derive(Clone, Debug)]
pub enum Clock {
    /// Wall-clock time.
    System,
    /// Time that moves only when told to.
    Manual(Arc<ManualClock>),
}

impl Clock {
    /// The current instant.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Self::System => Utc::now(),
            Self::Manual(m) => m.now(),
        }
    }

    /// Returns once the clock reads `deadline` or later.
    pub async fn sleep_until(&self, deadline: DateTime<Utc>) {
        match self {
            Self::System => loop {
                let left = deadline - Utc::now();
                match left.to_std() {
                    Ok(d) if !d.is_zero() => tokio::time::sleep(d).await,
                    _ => return,
                }
            },
            Self::Manual(m) => {
                let mut now = m.now.subscribe();
                while *now.borrow_and_update() < deadline {
                    if now.changed().await.is_err() {
                        return std::future::pending().await;
                    }
                }
            }
        }
    }
}

/// A clock for tests: it starts where it is told and moves only by [`ManualClock::set`] or
/// [`ManualClock::advance`]; every scheduler sharing it wakes when it moves.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self {
            now: watch::Sender::new(start),
        })
    }

    /// What it reads.
    pub fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    /// Moves it to `t` (never backwards).
    pub fn set(&self, t: DateTime<Utc>) {
        self.now.send_if_modified(|now| {
            let moved = t > *now;
            if moved {
                *now = t;
            }
            moved
        });
    }

    /// Moves it forward by `d`.
    pub fn advance(&self, d: chrono::Duration) {
        self.set(self.now() + d);
    }
}
