//! Event store errors.

/// What can go wrong talking to the store or the relay's targets.
///
/// Each variant's message includes its cause, so none also returns it as its `source()`:
/// a chain printed with `{:#}` names every cause once.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL failed (connection, statement, …).
    #[error("database: {0}")]
    Database(sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migration(sqlx::migrate::MigrateError),
    /// NATS / JetStream failed doing `what`; the client's error is kept as it came (to be
    /// inspected with `downcast_ref`), not as its text.
    #[error("nats: {what}: {cause}")]
    Nats {
        /// What was being done (`publish <event id>`, `create stream FLEXCORE_EVENTS`).
        what: String,
        /// The async-nats error.
        cause: async_nats::Error,
    },
    /// JetStream did not acknowledge a publication: not in time, or the connection
    /// changed before it did (the batch is published again).
    #[error("nats: {0}")]
    Unacknowledged(String),
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

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        Self::Migration(error)
    }
}

impl StoreError {
    /// A NATS failure while doing `what`.
    pub fn nats(what: impl Into<String>, cause: impl Into<async_nats::Error>) -> Self {
        Self::Nats {
            what: what.into(),
            cause: cause.into(),
        }
    }

    /// Whether the store cannot be reached right now (see [`is_unavailable`]), or is
    /// shutting down: a retry later may succeed.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Database(error) => is_unavailable(error),
            Self::Closed => true,
            _ => false,
        }
    }
}

/// Whether a Postgres failure means the database could not be reached, went away or
/// is restarting (answered `unavailable`: retry later) rather than a failure of the
/// statement itself (answered `internal`):
/// - the pool: no connection in time (`PoolTimedOut`), the pool closed;
/// - the connection: I/O errors (reset, broken pipe, EOF), TLS, a crashed worker, a
///   protocol error caused by the connection closing mid-message;
/// - the server: SQLSTATE `57P01` admin_shutdown (fast shutdown, `pg_terminate_backend`),
///   `57P02` crash_shutdown (another backend crashed), `57P03` cannot_connect_now
///   (starting up, in recovery), class `08` (connection exceptions) and `53300`
///   too_many_connections.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_unavailable_sqlstate(&code)),
        sqlx::Error::Protocol(message) => is_connection_closed(message),
        _ => false,
    }
}

/// SQLSTATEs of a server that is shutting down, restarting, unreachable or full.
fn is_unavailable_sqlstate(code: &str) -> bool {
    matches!(code, "57P01" | "57P02" | "57P03" | "53300") || code.starts_with("08")
}

/// Whether a protocol error's text says the connection closed under it (a message cut
/// short at EOF).
fn is_connection_closed(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "expected to read",
        "eof",
        "connection closed",
        "connection reset",
        "broken pipe",
    ]
    .iter()
    .any(|sign| message.contains(sign))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    #[test]
    fn a_chain_printed_in_full_names_the_cause_once() {
        let error = anyhow::Error::from(StoreError::from(sqlx::Error::PoolTimedOut)).context("appending");
        let text = format!("{error:#}");
        assert_eq!(text.matches("pool timed out").count(), 1, "{text}");
        assert!(text.starts_with("appending: database: "), "{text}");
    }

    /// A database error with SQLSTATE `code` (sqlx's own are built only by its driver).
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            "test"
        }

        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }

        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }

        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }

        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }

        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn coded(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Coded(code)))
    }

    #[test]
    fn restarts_crashes_and_lost_connections_are_unavailable() {
        for code in [
            "57P01", "57P02", "57P03", "08000", "08003", "08006", "08001", "08P01", "53300",
        ] {
            assert!(is_unavailable(&coded(code)), "{code}");
        }
        let io = |kind| sqlx::Error::Io(std::io::Error::new(kind, "gone"));
        for error in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
            sqlx::Error::Tls("handshake eof".into()),
            io(std::io::ErrorKind::UnexpectedEof),
            io(std::io::ErrorKind::ConnectionReset),
            io(std::io::ErrorKind::BrokenPipe),
            sqlx::Error::Protocol("expected to read 5 bytes, got 0 bytes at EOF".into()),
            sqlx::Error::Protocol("connection closed while reading a message".into()),
        ] {
            assert!(is_unavailable(&error), "{error}");
            assert!(StoreError::Database(error).is_unavailable());
        }
        assert!(StoreError::Closed.is_unavailable());
    }

    #[test]
    fn statement_failures_are_not_unavailable() {
        // unique_violation, serialization_failure, undefined_table, query_canceled,
        // disk_full, data exception.
        for code in ["23505", "40001", "42P01", "57014", "53100", "22P02"] {
            assert!(!is_unavailable(&coded(code)), "{code}");
        }
        for error in [
            sqlx::Error::RowNotFound,
            sqlx::Error::Protocol("unknown message type: 'x'".into()),
            sqlx::Error::ColumnNotFound("doc".into()),
        ] {
            assert!(!is_unavailable(&error), "{error}");
        }
        assert!(!StoreError::Protocol("empty result".into()).is_unavailable());
        assert!(!StoreError::nats("publish", "timed out").is_unavailable());
    }
}
