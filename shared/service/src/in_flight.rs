//! Counts of work in progress, by kind ("commands", "queries", "run attempts", …), so the
//! last log line of a process that gives up at the end of its shutdown grace says what it
//! abandoned.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

type Counters = Mutex<BTreeMap<&'static str, Arc<AtomicUsize>>>;

fn counters() -> &'static Counters {
    static COUNTERS: OnceLock<Counters> = OnceLock::new();
    COUNTERS.get_or_init(Default::default)
}

/// One piece of work of `kind` in progress, until dropped.
#[derive(Debug)]
pub struct Tracked(Arc<AtomicUsize>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one piece of work of `kind` until the returned guard is dropped.
pub fn track(kind: &str) -> Tracked {
    let counter = {
        let mut all = counters().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match all.get(kind) {
            Some(counter) => counter.clone(),
            None => {
                let counter = Arc::new(AtomicUsize::new(0));
                all.insert(Box::leak(kind.to_owned().into_boxed_str()), counter.clone());
                counter
            }
        }
    };
    counter.fetch_add(1, Ordering::Relaxed);
    Tracked(counter)
}

/// `3 commands, 1 run attempts`: what is in progress now (empty when nothing is).
pub fn summary() -> String {
    let all = counters().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    all.iter()
        .map(|(kind, n)| (kind, n.load(Ordering::Relaxed)))
        .filter(|(_, n)| *n > 0)
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_counted_while_its_guard_lives() {
        let a = track("widgets in test");
        let b = track("widgets in test");
        assert!(summary().contains("2 widgets in test"), "{}", summary());
        drop(a);
        drop(b);
        assert!(!summary().contains("widgets in test"), "{}", summary());
    }
}
