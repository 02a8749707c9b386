//! Why the domain refused a command (or could not fold a stored event). Each variant maps
//! to one wire error code, so the glue never has to guess.

use flexcore_contracts::{ErrorBody, ErrorCode};
use serde_json::Value;

/// A refusal of the domain, by error code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    /// The command breaks a rule of the contract (`validation_failed`): fix it, do not retry as is.
    #[error("{message}")]
    Validation {
        /// What is wrong and how to fix it.
        message: String,
        /// Where it is wrong (step index, field, JSON pointer), when known.
        details: Option<Value>,
    },
    /// The addressed or a referenced aggregate does not exist (`not_found`).
    #[error("{0}")]
    NotFound(String),
    /// The command collides with existing data or a newer attempt (`conflict`).
    #[error("{message}")]
    Conflict {
        /// What collided.
        message: String,
        /// Machine-readable reason (`stale_attempt`, `exists`, …).
        details: Option<Value>,
    },
    /// The aggregate's current state forbids the command (`invalid_state`).
    #[error("{0}")]
    InvalidState(String),
    /// A stored event cannot be folded: a bug or a damaged log (`internal`).
    #[error("stored events cannot be folded: {0}")]
    Corrupt(String),
}

impl DomainError {
    /// A validation error without details.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::Validation {
            message: message.into(),
            details: None,
        }
    }

    /// A validation error with structured details.
    pub fn validation_at(message: impl Into<String>, details: Value) -> Self {
        Self::Validation {
            message: message.into(),
            details: Some(details),
        }
    }

    /// A conflict with structured details.
    pub fn conflict(message: impl Into<String>, details: Value) -> Self {
        Self::Conflict {
            message: message.into(),
            details: Some(details),
        }
    }

    /// The wire error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Validation { .. } => ErrorCode::ValidationFailed,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict { .. } => ErrorCode::Conflict,
            Self::InvalidState(_) => ErrorCode::InvalidState,
            Self::Corrupt(_) => ErrorCode::Internal,
        }
    }

    /// The `error` object of the reply.
    pub fn to_error_body(&self) -> ErrorBody {
        let body = ErrorBody::new(self.code(), self.to_string());
        match self {
            Self::Validation { details: Some(d), .. } | Self::Conflict { details: Some(d), .. } => {
                body.with_details(d.clone())
            }
            _ => body,
        }
    }
}
