//! Why the domain refused a command (or could not fold a stored event). Each variant maps
//! to one wire error code and carries the contract's reason, so the glue never has to guess.

use flexcore_contracts::{ErrorBody, ErrorCode, ErrorReason};
use serde_json::{Map, Value};

/// A refusal of the domain, by error code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    /// The command breaks a rule that depends on stored state (`validation_failed`): a
    /// step's plugin is disabled or of the wrong kind, its config does not satisfy the
    /// plugin's schema, … (rules of the body alone are the schema's, checked on decoding).
    #[error("{message}")]
    Validation {
        /// Which rule.
        reason: ErrorReason,
        /// JSON pointer of the field at fault.
        path: Option<String>,
        /// What is wrong and how to fix it.
        message: String,
        /// Reason-specific facts.
        extra: Map<String, Value>,
    },
    /// The addressed or a referenced aggregate does not exist (`not_found`).
    #[error("{0}")]
    NotFound(String),
    /// An aggregate a field of the command refers to does not exist (`not_found`, with the
    /// field's JSON pointer: a step's plugin).
    #[error("{message}")]
    NotFoundAt {
        /// JSON pointer of the field naming it.
        path: String,
        /// What is missing and how to fix it.
        message: String,
    },
    /// The command collides with existing data or a newer attempt (`conflict`).
    #[error("{message}")]
    Conflict {
        /// Which collision (`stale_attempt`, `exists`, …).
        reason: ErrorReason,
        /// What collided.
        message: String,
        /// Reason-specific facts.
        extra: Map<String, Value>,
    },
    /// The aggregate's current state forbids the command (`invalid_state`).
    #[error("{0}")]
    InvalidState(String),
    /// A stored event cannot be folded: a bug or a damaged log (`internal`).
    #[error("stored events cannot be folded: {0}")]
    Corrupt(String),
}

impl DomainError {
    /// A validation error of `reason` at JSON pointer `path`.
    pub fn validation(reason: ErrorReason, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            reason,
            path: Some(path.into()),
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// A conflict of `reason`.
    pub fn conflict(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::Conflict {
            reason,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// Adds a reason-specific fact (validation errors and conflicts).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Self::Validation { extra, .. } | Self::Conflict { extra, .. } = &mut self {
            extra.insert(key.to_owned(), value.into());
        }
        self
    }

    /// The wire error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Validation { .. } => ErrorCode::ValidationFailed,
            Self::NotFound(_) | Self::NotFoundAt { .. } => ErrorCode::NotFound,
            Self::Conflict { .. } => ErrorCode::Conflict,
            Self::InvalidState(_) => ErrorCode::InvalidState,
            Self::Corrupt(_) => ErrorCode::Internal,
        }
    }

    /// The reason.
    pub fn reason(&self) -> ErrorReason {
        match self {
            Self::Validation { reason, .. } | Self::Conflict { reason, .. } => *reason,
            Self::NotFound(_) | Self::NotFoundAt { .. } => ErrorReason::NotFound,
            Self::InvalidState(_) => ErrorReason::InvalidState,
            Self::Corrupt(_) => ErrorReason::Internal,
        }
    }

    /// The `error` object of the reply.
    pub fn to_error_body(&self) -> ErrorBody {
        let mut body = ErrorBody::new(self.reason(), self.to_string());
        // A reason of the wrong code would break the contract: the code wins.
        body.code = self.code();
        match self {
            Self::Validation { path, extra, .. } => {
                body.details.path = path.clone();
                body.details.extra = Box::new(extra.clone());
            }
            Self::NotFoundAt { path, .. } => body.details.path = Some(path.clone()),
            Self::Conflict { extra, .. } => body.details.extra = Box::new(extra.clone()),
            _ => {}
        }
        body
    }
}
