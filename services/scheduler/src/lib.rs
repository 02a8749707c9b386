//! `flexcore-scheduler`: the service that owns time. It keeps its schedules, pipelines and
//! unfinished runs from the event stream, and at the right moments sends commands:
//! `run.request` for cron slots (ids derived from the slot, so any number of replicas fire
//! one run), `schedule.skip_slot` / `schedule.miss_slots` for slots it does not fire,
//! `run.retry` after back-off, `run.time_out` for lapsed leases and exceeded run timeouts.
//!
//! - [`core`]: state and decisions, no I/O (the DST rule lives in `flexcore-cron`).
//! - [`service`]: the event consumer, heartbeats, presence, timers and command sending.
//! - [`metrics`]: the readiness checks (the fire-lag histogram is observed in [`service`]).
//! - [`members`]: which replica acts first on what (rendezvous hashing over the replicas
//!   heard); [`timers`]: deadlines; [`clock`]: system or manual time.

pub mod clock;
pub mod core;
pub mod members;
pub mod metrics;
pub mod service;
pub mod snapshot;
pub mod timers;

/// This service and its version, as its replies and announcements name it
/// (`Flexcore-Service`).
pub const SERVICE: &str = concat!("flexcore-scheduler/", env!("CARGO_PKG_VERSION"));

pub use clock::{Clock, ManualClock};
pub use service::run;
