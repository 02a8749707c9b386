//! Errors of the projection side.

use flexcore_eventstore::StoreError;

/// Why applying events or answering a query failed.
///
/// Each variant's message includes its cause, so none also returns it as its `source()`:
/// a chain printed with `{:#}` names every cause once.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// Postgres refused or is unreachable.
    #[error("database: {0}")]
    Database(sqlx::Error),
    /// Reading the event store failed.
    #[error("event store: {0}")]
    Store(StoreError),
    /// NATS / JetStream failed: the client's error as it came (or what ended).
    #[error("nats: {0}")]
    Nats(async_nats::Error),
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
    /// A rebuild run is no longer the rebuild's: its leader stopped leading (shutdown or
    /// an error; the run stopped between two batches and stays `running` for the next
    /// leader to restart), or the next leader took the rebuild over.
    #[error("stopped: the rebuild is no longer this run's")]
    Stopped,
    /// A row of a read model could not be (de)serialised.
    #[error("read model row: {0}")]
    Row(serde_json::Error),
}

impl From<sqlx::Error> for ProjectionError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error)
    }
}

impl From<StoreError> for ProjectionError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl From<serde_json::Error> for ProjectionError {
    fn from(error: serde_json::Error) -> Self {
        Self::Row(error)
    }
}

impl ProjectionError {
    /// A NATS error.
    pub fn nats(e: impl Into<async_nats::Error>) -> Self {
        Self::Nats(e.into())
    }
}
