//! The one error type plugins return.

use std::fmt::Display;
use std::io;

use crate::{ArgsError, ProtocolError};

/// Anything that stops a plugin. The `run_*` helpers print it to stderr and exit 1
/// (except [`PluginError::OutputClosed`], which ends the plugin quietly). A message that
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
    /// Any other failure, with its message.
    #[error("{0}")]
    Other(String),
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

    /// Classifies a stdout write error: a broken pipe means the reader has gone.
    pub(crate) fn from_output(e: io::Error) -> PluginError {
        match e.kind() {
            io::ErrorKind::BrokenPipe => PluginError::OutputClosed,
            _ => PluginError::Io(e),
        }
    }
}
