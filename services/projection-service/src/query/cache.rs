//! Recent list pages, answered again while nothing they show can have changed.
//!
//! A page is kept with the [`Stamp`] of what this replica knew of the read models when
//! it read it: every projection's checkpoint and the changes it made in place (derived
//! columns recomputed, a rebuild swapped in at the live checkpoint), taken before the
//! read, so the page shows at least that much. A later identical query (the same view,
//! filters, cursor and limit; `min_position` aside, since [`super::reach`] has already
//! waited for it) is answered from the kept page while the stamp is unchanged. Every event
//! a projection applies changes the stamp.
//!
//! A kept page also ends at its expiry: the first next fire it shows (computed at query
//! time, it would be out of date once that instant passes), and at most [`MAX_AGE`]
//! after it was read. The age bound covers what this replica's stamp cannot see: a
//! replica that does not lead hears of the leader's commits by their announcements
//! (normally within milliseconds) and reloads every checkpoint once a second
//! (`crate::positions`), and does not hear of the leader's changes in place at all. So a
//! page answered by a replica may be older than what another replica answers, by that
//! long at most, as the reply's `position` shows; read-your-writes (`min_position`) is
//! unaffected.
//!
//! Pages are kept up to a total size in bytes (`projection.list_cache_bytes`; 0 keeps
//! none), least recently used first out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Answer;
use crate::positions::Stamp;

/// The longest a page is kept.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// The kept pages.
pub struct PageCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    pages: lru::LruCache<String, Kept>,
    bytes: usize,
}

struct Kept {
    stamp: Stamp,
    expires: Instant,
    answer: Arc<Answer>,
}

impl Kept {
    /// What keeping `answer` under `key` takes, roughly.
    fn size(key: &str, answer: &Answer) -> usize {
        key.len() + Self::answer_size(answer)
    }

    fn answer_size(answer: &Answer) -> usize {
        answer.data.len() + answer.next_cursor.as_ref().map_or(0, String::len) + 128
    }
}

impl PageCache {
    /// Keeps pages up to `max_bytes` in all (0: none).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            inner: Mutex::new(Inner {
                pages: lru::LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    /// Whether any page can be kept.
    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    /// The page kept for `key`, when it was read at `stamp` and has not expired at `now`.
    /// A kept page that no longer matches is dropped.
    pub fn get(&self, key: &str, stamp: &Stamp, now: Instant) -> Option<Arc<Answer>> {
        if !self.enabled() {
            return None;
        }
        let mut inner = self.inner.lock();
        let current = {
            let kept = inner.pages.get(key)?;
            (kept.stamp == *stamp && now < kept.expires).then(|| kept.answer.clone())
        };
        if current.is_none() {
            if let Some(kept) = inner.pages.pop(key) {
                inner.bytes -= Kept::size(key, &kept.answer);
            }
        }
        current
    }

    /// Keeps `answer` for `key`, read at `stamp`, until `expires` (at most [`MAX_AGE`]
    /// after `now`). A page larger than an eighth of the budget is not kept.
    pub fn put(&self, key: String, stamp: Stamp, now: Instant, expires: Option<Instant>, answer: Arc<Answer>) {
        let size = Kept::size(&key, &answer);
        if !self.enabled() || size > self.max_bytes / 8 {
            return;
        }
        let expires = expires.map_or(now + MAX_AGE, |at| at.min(now + MAX_AGE));
        if expires <= now {
            return;
        }
        let key_len = key.len();
        let mut inner = self.inner.lock();
        if let Some(old) = inner.pages.put(key, Kept { stamp, expires, answer }) {
            inner.bytes -= key_len + Kept::answer_size(&old.answer);
        }
        inner.bytes += size;
        while inner.bytes > self.max_bytes {
            let Some((key, kept)) = inner.pages.pop_lru() else {
                break;
            };
            inner.bytes -= Kept::size(&key, &kept.answer);
        }
    }

    /// The pages kept and their size in bytes.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.pages.len(), inner.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(data: &str) -> Arc<Answer> {
        Arc::new(Answer {
            data: data.to_owned(),
            next_cursor: None,
            position: 7,
        })
    }

    fn stamp(position: u64) -> Stamp {
        let checkpoint = flexcore_eventstore::Checkpoint {
            transaction_id: position,
            global_position: position,
        };
        Stamp::of(vec![checkpoint; 5], 0)
    }

    #[test]
    fn a_page_is_answered_again_only_at_the_stamp_it_was_read_at() {
        let cache = PageCache::new(1 << 20);
        let now = Instant::now();
        assert!(cache.get("a", &stamp(1), now).is_none());
        cache.put("a".into(), stamp(1), now, None, answer("[1]"));
        assert_eq!(cache.get("a", &stamp(1), now).unwrap().data, "[1]");
        assert!(cache.get("b", &stamp(1), now).is_none(), "another query");
        // An event applied since: not answered, and dropped.
        assert!(cache.get("a", &stamp(2), now).is_none());
        assert_eq!(cache.usage().0, 0);
        assert!(cache.get("a", &stamp(1), now).is_none());
    }

    #[test]
    fn a_page_ends_at_its_first_next_fire_and_at_most_a_second_after_it_was_read() {
        let cache = PageCache::new(1 << 20);
        let now = Instant::now();
        cache.put(
            "fires".into(),
            stamp(1),
            now,
            Some(now + Duration::from_millis(200)),
            answer("[]"),
        );
        cache.put(
            "later".into(),
            stamp(1),
            now,
            Some(now + Duration::from_secs(60)),
            answer("[]"),
        );
        cache.put("none".into(), stamp(1), now, None, answer("[]"));
        let soon = now + Duration::from_millis(199);
        assert!(cache.get("fires", &stamp(1), soon).is_some());
        assert!(cache
            .get("fires", &stamp(1), now + Duration::from_millis(200))
            .is_none());
        let aged = now + MAX_AGE;
        assert!(cache.get("later", &stamp(1), aged - Duration::from_millis(1)).is_some());
        assert!(cache.get("later", &stamp(1), aged).is_none());
        assert!(cache.get("none", &stamp(1), aged).is_none());
        // A fire already due: not kept at all.
        cache.put("due".into(), stamp(1), now, Some(now), answer("[]"));
        assert!(cache.get("due", &stamp(1), now).is_none());
    }

    #[test]
    fn pages_are_kept_within_the_budget_least_recently_used_out() {
        let page = "x".repeat(1000);
        let size = Kept::size("k0", &answer(&page));
        let cache = PageCache::new(size * 8);
        let now = Instant::now();
        for i in 0..8 {
            cache.put(format!("k{i}"), stamp(1), now, None, answer(&page));
        }
        assert_eq!(cache.usage(), (8, size * 8));
        // k0 used again, so k1 is the least recently used when k8 comes.
        assert!(cache.get("k0", &stamp(1), now).is_some());
        cache.put("k8".into(), stamp(1), now, None, answer(&page));
        assert_eq!(cache.usage(), (8, size * 8));
        assert!(cache.get("k1", &stamp(1), now).is_none());
        assert!(cache.get("k0", &stamp(1), now).is_some());
        // The same key again replaces the page and its size.
        cache.put("k0".into(), stamp(1), now, None, answer("[]"));
        assert_eq!(cache.usage(), (8, size * 7 + Kept::size("k0", &answer("[]"))));
        // A page over an eighth of the budget is not kept.
        cache.put("big".into(), stamp(1), now, None, answer(&"x".repeat(size)));
        assert!(cache.get("big", &stamp(1), now).is_none());
    }

    #[test]
    fn a_cache_of_no_bytes_keeps_nothing() {
        let cache = PageCache::new(0);
        assert!(!cache.enabled());
        let now = Instant::now();
        cache.put("a".into(), stamp(1), now, None, answer("[]"));
        assert!(cache.get("a", &stamp(1), now).is_none());
        assert_eq!(cache.usage(), (0, 0));
    }
}
