//! What the store reports for metrics (`flexcore_events_appended_total`,
//! `flexcore_relay_lag_seconds`), through [`Hooks`] a service installs once: the store has
//! no metrics dependency, and without hooks (tools, most tests) a report costs one atomic
//! load.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};

use crate::model::{AppendOutcome, AppendRequest};

/// Where this process's relay candidate stands, reported as it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayProgress {
    /// Another candidate leads: this one reports no lag.
    Standby,
    /// Events wait to be published; the oldest of them was recorded at this time.
    Pending(DateTime<Utc>),
    /// JetStream acknowledged a batch; its last event was recorded at this time.
    Published(DateTime<Utc>),
    /// The next event cannot be published (its message of `size` bytes exceeds the server's
    /// `limit`): the relay holds everything from it on, retrying, until the limit grows.
    Blocked {
        /// The message's size.
        size: usize,
        /// The server's `max_payload`.
        limit: usize,
    },
}

/// Why the relay cannot go on, while it cannot (shown by readiness checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayBlock {
    /// What blocks it, naming the event it is held at and the cause.
    pub reason: String,
    /// Since when (the first failure at that event).
    pub since: DateTime<Utc>,
}

/// The relay candidate (of this process) that set the mark, and the mark. A process runs
/// one candidate; tests run several, and one must not clear another's mark.
static BLOCKED: std::sync::Mutex<Option<(u64, RelayBlock)>> = std::sync::Mutex::new(None);

/// What blocks this process's relay, if anything does.
pub fn relay_block() -> Option<RelayBlock> {
    BLOCKED
        .lock()
        .ok()
        .and_then(|b| b.as_ref().map(|(_, block)| block.clone()))
}

/// Records what blocks the relay candidate `owner`, replacing any mark; returns whether
/// the reason changed (or there was no mark).
pub(crate) fn block_relay(owner: u64, reason: String, since: DateTime<Utc>) -> bool {
    let Ok(mut blocked) = BLOCKED.lock() else { return false };
    let changed = blocked.as_ref().is_none_or(|(_, current)| current.reason != reason);
    *blocked = Some((owner, RelayBlock { reason, since }));
    changed
}

/// Clears the mark if candidate `owner` set it; returns whether it did.
pub(crate) fn unblock_relay(owner: u64) -> bool {
    let Ok(mut blocked) = BLOCKED.lock() else { return false };
    if blocked.as_ref().is_some_and(|(by, _)| *by == owner) {
        *blocked = None;
        return true;
    }
    false
}

/// The functions the store calls.
#[derive(Debug, Clone, Copy)]
pub struct Hooks {
    /// Once per committed event, after its transaction committed.
    pub appended: fn(aggregate_type: &str, event_type: &str),
    /// By the relay as its progress changes.
    pub relay: fn(RelayProgress),
}

static HOOKS: OnceLock<Hooks> = OnceLock::new();

/// Installs the hooks for the rest of the process. The first call wins; later ones
/// return `false` and change nothing (several services in one test process).
pub fn install(hooks: Hooks) -> bool {
    HOOKS.set(hooks).is_ok()
}

/// Reports the events of the committed requests among `requests` (paired with `outcomes`).
pub(crate) fn committed(requests: &[AppendRequest], outcomes: &[AppendOutcome]) {
    let Some(hooks) = HOOKS.get() else { return };
    for (request, outcome) in requests.iter().zip(outcomes) {
        if matches!(outcome, AppendOutcome::Committed { .. }) {
            for event in &request.events {
                (hooks.appended)(&event.aggregate_type, &event.event_type);
            }
        }
    }
}

/// Reports the relay's progress.
pub(crate) fn relay(progress: RelayProgress) {
    if let Some(hooks) = HOOKS.get() {
        (hooks.relay)(progress);
    }
}
