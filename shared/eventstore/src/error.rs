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
}
