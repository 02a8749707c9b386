//! Errors of the projection side.

use flexcore_eventstore::StoreError;

/// Why applying events or answering a query failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// Postgres refused or is unreachable.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Reading the event store failed.
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    /// NATS / JetStream failed.
    #[error("nats: {0}")]
    Nats(String),
    /// An event could not be decoded or contradicts the view (a bug or a corrupt log).
    #[error("event {position} ({event_type}): {message}")]
    Event {
        /// Its global position.
        position: u64,
        /// Its type.
        event_type: String,
        /// What is wrong.
        message: String,
    },
    /// A state the projection cannot continue from (reported, then retried).
    #[error("{0}")]
    Invariant(String),
    /// A row of a read model could not be (de)serialised.
    #[error("read model row: {0}")]
    Row(#[from] serde_json::Error),
}

impl ProjectionError {
    /// A NATS error.
    pub fn nats(e: impl std::fmt::Display) -> Self {
        Self::Nats(e.to_string())
    }
}
