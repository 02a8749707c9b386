//! The command service's metrics and readiness checks.
//!
//! - `flexcore_commands_processed_total{command_type,status}` and
//!   `flexcore_command_duration_seconds{command_type}`, recorded by the request loop for
//!   every answered command. The handles are cached per command type and status in a map
//!   built once, so recording one command is a map look-up by subject, two atomic adds and
//!   a histogram observation: no allocation, no lock of ours.
//! - `flexcore_events_appended_total` and `flexcore_relay_lag_seconds`, reported by the
//!   event store through the hooks [`install`] sets.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, SystemTime};

use flexcore_contracts::commands::Command;
use flexcore_contracts::{subjects, CommandReply, ErrorCode};
use flexcore_eventstore::metrics::{Hooks, RelayProgress};
use flexcore_service::admin::Checks;
use flexcore_service::metrics::{self as shared, CounterHandle, HistogramHandle};
use sqlx::PgPool;

/// `ok` plus every error code.
const STATUSES: usize = 10;

/// The status label of a reply and its slot in [`PerType::processed`].
fn status(reply: &CommandReply) -> (usize, &'static str) {
    let code = match reply {
        CommandReply::Accepted(_) => return (0, "ok"),
        CommandReply::Rejected(rejected) => rejected.error.code,
    };
    // Exhaustive, so a new code cannot go uncounted.
    let slot = match code {
        ErrorCode::ValidationFailed => 1,
        ErrorCode::NotFound => 2,
        ErrorCode::Conflict => 3,
        ErrorCode::InvalidState => 4,
        ErrorCode::Unauthorized => 5,
        ErrorCode::PayloadTooLarge => 6,
        ErrorCode::Stale => 7,
        ErrorCode::Unavailable => 8,
        ErrorCode::Internal => 9,
    };
    (slot, code.as_str())
}

/// The handles of one command type, each created on its first use (so `/metrics` lists
/// only what happened).
struct PerType {
    name: String,
    duration: OnceLock<HistogramHandle>,
    processed: [OnceLock<CounterHandle>; STATUSES],
}

impl PerType {
    fn new(name: String) -> Self {
        Self {
            name,
            duration: OnceLock::new(),
            processed: Default::default(),
        }
    }
}

/// The command metrics by command subject.
struct CommandMetrics {
    by_command: HashMap<(&'static str, &'static str), PerType>,
    /// Subjects that name no command.
    unknown: PerType,
}

static COMMANDS: LazyLock<CommandMetrics> = LazyLock::new(|| CommandMetrics {
    by_command: Command::ALL
        .iter()
        .map(|&(aggregate, action)| ((aggregate, action), PerType::new(format!("{aggregate}.{action}"))))
        .collect(),
    unknown: PerType::new("unknown".to_owned()),
});

/// Records one answered command: `subject` it came on, its `reply`, and the time from
/// receipt to the reply being ready.
pub fn record(subject: &str, reply: &CommandReply, took: Duration) {
    let metrics = &*COMMANDS;
    // The map's keys are 'static; looking up borrowed ones needs the shorter-lived view.
    let by_command: &HashMap<(&str, &str), PerType> = &metrics.by_command;
    let per = subjects::parse_command(subject)
        .and_then(|key| by_command.get(&key))
        .unwrap_or(&metrics.unknown);
    let (slot, status) = status(reply);
    per.processed[slot]
        .get_or_init(|| shared::commands().processed(&per.name, status))
        .inc();
    per.duration
        .get_or_init(|| shared::commands().duration(&per.name))
        .observe(took.as_secs_f64());
}

/// Installs the event store's metric hooks (once per process) and registers the command
/// and store families, so `/metrics` lists them from the start.
pub fn install() {
    shared::commands();
    shared::store();
    flexcore_eventstore::metrics::install(Hooks {
        appended: |aggregate_type, event_type| shared::store().appended.inc_by(aggregate_type, event_type, 1),
        relay: |progress| match progress {
            RelayProgress::Standby => shared::store().relay_standby(),
            RelayProgress::Pending(oldest) => shared::store().relay_pending(SystemTime::from(oldest)),
            RelayProgress::Published(last) => shared::store().relay_published(SystemTime::from(last)),
            // The lag keeps growing from the oldest pending event; readiness names the cause.
            RelayProgress::Blocked { .. } => {}
        },
    });
}

/// The readiness checks of the command service: NATS, Postgres, the streams it
/// publishes to (`FLEXCORE_EVENTS`, `FLEXCORE_WORK`), and its relay: unready while the
/// relay this replica leads is held at an event, one larger than the server's
/// `max_payload` or one whose publishing has kept failing for
/// [`flexcore_eventstore::relay::BLOCKED_AFTER`]; ready again once it publishes, or once
/// this replica no longer leads (docs/troubleshooting.md, "relay blocked").
pub fn checks(nats: &async_nats::Client, pool: &PgPool) -> Checks {
    Checks::new()
        .nats(nats.clone())
        .postgres(pool.clone())
        .stream(nats.clone(), subjects::EVENTS_STREAM)
        .stream(nats.clone(), subjects::WORK_STREAM)
        .serving("commands")
        .with_fn("relay", || async {
            match flexcore_eventstore::metrics::relay_block() {
                None => flexcore_service::admin::CheckOutcome::ok("publishing"),
                Some(block) => flexcore_service::admin::CheckOutcome::failed(format!(
                    "blocked since {}: {}",
                    block.since.to_rfc3339(),
                    block.reason
                )),
            }
        })
}
