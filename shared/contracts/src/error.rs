//! Error codes and the error body shared by command and query replies.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a command or query was refused. The wire form is snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or breaks a rule of the contract; fix it, do not retry as is.
    ValidationFailed,
    /// The addressed aggregate (or a referenced one) does not exist.
    NotFound,
    /// Optimistic concurrency lost, a unique name is taken, a slot limit is reached,
    /// or a stale attempt acted; reload and decide again.
    Conflict,
    /// The aggregate's current state forbids the command (e.g. pausing an archived pipeline).
    InvalidState,
    /// The actor may not do this.
    Unauthorized,
    /// The payload exceeds the service's limit.
    PayloadTooLarge,
    /// A query's `min_position` was not reached within its bound.
    Stale,
    /// A dependency (database, NATS) is unavailable; retrying later may succeed.
    Unavailable,
    /// A bug or unexpected failure inside the service.
    Internal,
}

impl ErrorCode {
    /// The wire name of the code (`validation_failed`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ValidationFailed => "validation_failed",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::InvalidState => "invalid_state",
            Self::Unauthorized => "unauthorized",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Stale => "stale",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` object of a refused request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation saying what was wrong and, where possible, how to fix it.
    pub message: String,
    /// Structured details (field path, current version, …), when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ErrorBody {
    /// An error body without details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// Adds structured details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorBody {}
