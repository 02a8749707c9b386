//! One deadline per key (a schedule's next slot, a run's next lease/retry/timeout check),
//! ordered by time.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What a deadline belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A schedule's next slot (or buffered slot).
    Schedule(Uuid),
    /// A run's lease expiry, retry or timeout.
    Run(Uuid),
}

impl Key {
    /// The aggregate id (what ownership is computed on).
    pub fn id(self) -> Uuid {
        match self {
            Self::Schedule(id) | Self::Run(id) => id,
        }
    }
}

/// Deadlines by key and by time.
#[derive(Debug, Default)]
pub struct Timers {
    by_time: BTreeSet<(DateTime<Utc>, Key)>,
    by_key: HashMap<Key, DateTime<Utc>>,
}

impl Timers {
    /// Sets (or with `None` clears) the deadline of `key`.
    pub fn set(&mut self, key: Key, at: Option<DateTime<Utc>>) {
        if let Some(old) = self.by_key.remove(&key) {
            self.by_time.remove(&(old, key));
        }
        if let Some(at) = at {
            self.by_key.insert(key, at);
            self.by_time.insert((at, key));
        }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<DateTime<Utc>> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Removes and returns every key due at `now`, earliest first.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<Key> {
        let mut due = Vec::new();
        while let Some(&(at, key)) = self.by_time.first() {
            if at > now {
                break;
            }
            self.by_time.pop_first();
            self.by_key.remove(&key);
            due.push(key);
        }
        due
    }

    /// Number of armed deadlines.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rearming_replaces_and_due_keys_come_out_in_order() {
        let t = |s: i64| DateTime::from_timestamp(s, 0).unwrap_or_default();
        let (a, b) = (Key::Schedule(Uuid::from_u128(1)), Key::Run(Uuid::from_u128(2)));
        let mut timers = Timers::default();
        timers.set(a, Some(t(30)));
        timers.set(b, Some(t(20)));
        timers.set(a, Some(t(10)));
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.next(), Some(t(10)));
        assert_eq!(timers.take_due(t(15)), vec![a]);
        assert_eq!(timers.take_due(t(25)), vec![b]);
        timers.set(a, Some(t(40)));
        timers.set(a, None);
        assert!(timers.is_empty());
    }
}
