//! The PostgreSQL event store and its JetStream outbox relay.
//!
//! # Layout
//! - [`model`]: what is appended ([`AppendRequest`], [`NewEvent`]) and read ([`RecordedEvent`]).
//! - [`store`]: [`EventStore`]: per-aggregate and global (transaction-horizon) reads,
//!   command-log look-ups, and appends through the group committer.
//! - [`append`]: the group committer: concurrent appends share one transaction commit.
//! - `read`: the group reader: concurrent per-aggregate reads share one query.
//! - [`relay`]: the outbox relay publishing the log to `FLEXCORE_EVENTS` in order; one
//!   active relay per database through an advisory lock, with fail-over.
//! - [`streams`]: idempotent creation/update of the JetStream streams at start-up.
//! - [`error`]: the store error type, [`StoreError`].
//! - [`metrics`]: hooks through which a service counts appends and sees the relay's lag.
//!
//! The SQL lives in `migrations/` at the workspace root ([`MIGRATOR`] embeds it). The
//! group-commit function `flexcore_append` has one canonical source,
//! `shared/eventstore/sql/flexcore_append.sql` ([`append::APPEND_FUNCTION_SQL`]): the
//! newest migration defining it repeats it, and tests check that and the deployed
//! function against it, and its JSON field names against [`AppendRequest`]'s.

pub mod append;
mod batch;
pub mod error;
pub mod metrics;
pub mod model;
mod read;
pub mod relay;
pub mod store;
pub mod streams;

pub use batch::Announced;
pub use error::StoreError;
pub use model::{
    AppendOutcome, AppendRequest, Checkpoint, NewEvent, RecordedEvent, SlotClaim, StoredCommand, UniqueKey,
    VersionCheck,
};
pub use store::{read_all_with, EventStore};

/// The workspace migrations, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");
