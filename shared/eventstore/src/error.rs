//! Event store errors.

/// What can go wrong talking to the store or the relay's targets.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL failed (connection, statement, …).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// NATS / JetStream failed.
    #[error("nats: {0}")]
    Nats(String),
    /// The database returned something this build does not understand.
    #[error("unexpected store response: {0}")]
    Protocol(String),
    /// The group committer has shut down.
    #[error("the event store is shutting down")]
    Closed,
    /// An event's message is larger than the NATS server accepts: the relay cannot
    /// publish it (nor, to keep the order, anything after it) until `max_payload` grows.
    #[error("event {event_id} ({event_type}, global position {global_position}) is a {size}-byte message; the NATS server accepts at most {limit} bytes")]
    TooLarge {
        /// The event.
        event_id: uuid::Uuid,
        /// Its type.
        event_type: String,
        /// Its position.
        global_position: u64,
        /// Its message's size (headers and body).
        size: usize,
        /// The server's `max_payload`.
        limit: usize,
    },
}
