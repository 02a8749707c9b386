//! Which replica acts on what: every replica announces itself on
//! `flexcore.sys.scheduler.presence`; each key (schedule or run) is owned by the live replica
//! with the highest rendezvous hash of (key, replica). The owner acts on time; the others act
//! only after the takeover grace and only if the outcome has not appeared in the log by then.
//! Replicas that disagree about membership both act, which the derived run ids and fenced
//! commands make harmless; a replica that dies is covered after the grace at once, and
//! dropped from everyone's view after three silent intervals.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// The replicas this one hears.
#[derive(Debug)]
pub struct Members {
    me: String,
    peers: HashMap<String, Instant>,
    timeout: Duration,
}

impl Members {
    /// Only `me`, until others are heard; peers unheard for `timeout` are dropped.
    pub fn new(me: String, timeout: Duration) -> Self {
        Self {
            me,
            peers: HashMap::new(),
            timeout,
        }
    }

    /// This replica's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Records an announcement; true when the set of members changed.
    pub fn heard(&mut self, instance: &str, alive: bool, now: Instant) -> bool {
        if instance == self.me {
            return false;
        }
        if alive {
            self.peers.insert(instance.to_owned(), now).is_none()
        } else {
            self.peers.remove(instance).is_some()
        }
    }

    /// Drops peers unheard for the timeout; true when any was dropped.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.peers.len();
        let timeout = self.timeout;
        self.peers.retain(|_, seen| now.duration_since(*seen) < timeout);
        self.peers.len() != before
    }

    /// Number of live replicas, this one included.
    pub fn count(&self) -> usize {
        self.peers.len() + 1
    }

    /// True when this replica owns `key`.
    pub fn owns(&self, key: Uuid) -> bool {
        let score = |instance: &str| Uuid::new_v5(&key, instance.as_bytes()).as_u128();
        let mine = score(&self.me);
        self.peers
            .keys()
            .all(|peer| score(peer) < mine || (score(peer) == mine && peer.as_str() > self.me.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_member_owns_each_key_and_a_dead_one_is_replaced() {
        let now = Instant::now();
        let names = ["a", "b", "c"];
        let views: Vec<Members> = names
            .iter()
            .map(|me| {
                let mut m = Members::new((*me).to_owned(), Duration::from_secs(3));
                for other in names {
                    m.heard(other, true, now);
                }
                m
            })
            .collect();
        let mut share = [0usize; 3];
        for k in 0..3000u128 {
            let owners: Vec<usize> = (0..3).filter(|&i| views[i].owns(Uuid::from_u128(k))).collect();
            assert_eq!(owners.len(), 1, "key {k}");
            share[owners[0]] += 1;
        }
        assert!(share.iter().all(|&s| s > 800), "uneven: {share:?}");
        // "c" stops announcing: after the timeout the others own everything between them.
        let mut a = Members::new("a".into(), Duration::from_secs(3));
        a.heard("b", true, now);
        a.heard("c", true, now - Duration::from_secs(5));
        assert!(a.expire(now));
        assert_eq!(a.count(), 2);
        assert!(!a.heard("c", false, now));
    }
}
