//! The one error type plugins return.

use std::fmt::Display;
use std::io;

use crate::{ArgsError, FailureKind, ProtocolError};

/// Anything that stops a plugin. The `run_*` helpers print it to stderr and exit with the
/// status of its [`PluginError::kind`] (except [`PluginError::OutputClosed`], which ends the
/// plugin quietly): the runner retries only the kinds a retry can fix. A message that
/// includes its cause does not also return it as its `source()`, so a chain printed with
/// `{:#}` names each cause once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The command line is wrong.
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// The config, state or catalog file is missing or invalid.
    #[error("{0}")]
    Config(String),
    /// An input line is not a valid Singer message.
    #[error("line {line}: {error}")]
    Protocol {
        /// 1-based input line number.
        line: u64,
        /// What is wrong with it.
        error: ProtocolError,
    },
    /// Reading input or writing files failed.
    #[error("I/O error: {0}")]
    Io(io::Error),
    /// Stdout was closed by the reader (the next stage has gone).
    #[error("output closed")]
    OutputClosed,
    /// Any other failure, with its message (exit status 1: retried).
    #[error("{0}")]
    Other(String),
    /// A failure of a stated kind (say [`FailureKind::NoInput`] for a missing file).
    #[error("{message}")]
    Failed {
        /// What kind of failure: it sets the exit status.
        kind: FailureKind,
        /// What happened.
        message: String,
    },
}

impl From<io::Error> for PluginError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

impl PluginError {
    /// A free-form error.
    pub fn msg(message: impl Display) -> PluginError {
        PluginError::Other(message.to_string())
    }

    /// A failure of kind `kind`: `PluginError::new(FailureKind::Config, "…")`.
    pub fn new(kind: FailureKind, message: impl Display) -> PluginError {
        PluginError::Failed {
            kind,
            message: message.to_string(),
        }
    }

    /// An I/O error on `what` (a path, say), classified by [`FailureKind::of_io`]: a missing
    /// file is permanent ([`FailureKind::NoInput`]), a failed read is not.
    pub fn io(what: impl Display, error: &io::Error) -> PluginError {
        PluginError::new(FailureKind::of_io(error), format_args!("{what}: {error}"))
    }

    /// The failure's kind, which sets the exit status: a bad command line is
    /// [`FailureKind::Usage`], a bad config, state or catalog file [`FailureKind::Config`],
    /// a broken input message [`FailureKind::Data`], an I/O error by [`FailureKind::of_io`],
    /// a free-form message [`FailureKind::Other`].
    pub fn kind(&self) -> FailureKind {
        match self {
            PluginError::Args(_) => FailureKind::Usage,
            PluginError::Config(_) => FailureKind::Config,
            PluginError::Protocol { .. } => FailureKind::Data,
            PluginError::Io(e) => FailureKind::of_io(e),
            PluginError::OutputClosed | PluginError::Other(_) => FailureKind::Other,
            PluginError::Failed { kind, .. } => *kind,
        }
    }

    /// Classifies a stdout write error: a broken pipe means the reader has gone.
    pub(crate) fn from_output(e: io::Error) -> PluginError {
        match e.kind() {
            io::ErrorKind::BrokenPipe => PluginError::OutputClosed,
            _ => PluginError::Io(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_the_kind_a_retry_needs() {
        assert_eq!(PluginError::Config("x".into()).kind(), FailureKind::Config);
        assert_eq!(PluginError::msg("x").kind(), FailureKind::Other);
        assert_eq!(
            PluginError::new(FailureKind::TempFail, "down").kind(),
            FailureKind::TempFail
        );
        let missing = PluginError::io("/in/a.csv", &io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(missing.kind(), FailureKind::NoInput);
        assert!(missing.to_string().starts_with("/in/a.csv: "), "{missing}");
        assert_eq!(
            PluginError::Io(io::Error::from(io::ErrorKind::Interrupted)).kind(),
            FailureKind::Io
        );
    }
}
