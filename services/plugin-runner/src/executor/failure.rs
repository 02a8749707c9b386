//! Why an execution failed, and the first-failure-wins slot the stages share.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::redact::Redactor;
use crate::sandbox::SandboxError;

/// The failure codes of [`ExecFailure::code`].
pub mod code {
    /// A stage ran past its wall-clock limit or its fuel budget.
    pub const TIMEOUT: &str = "timeout";
    /// A stage's linear memory would have grown past its cap.
    pub const MEMORY: &str = "memory";
    /// A wasm stage trapped (unreachable, a panic, an out-of-bounds access, …).
    pub const TRAP: &str = "trap";
    /// The Singer message stream broke the protocol.
    pub const PROTOCOL: &str = "protocol";
    /// A stage wrote more than its stdout or stderr cap.
    pub const OUTPUT_LIMIT: &str = "output_limit";
    /// A stage exited with a non-zero status (or a process was killed by a signal).
    pub const EXIT_STATUS: &str = "exit_status";
    /// The execution was cancelled by its caller.
    pub const CANCELLED: &str = "cancelled";
    /// A module's bytes do not match its digest.
    pub const DIGEST: &str = "digest";
    /// The runner could not set the stage up (module, pool, grants, files).
    pub const SANDBOX: &str = "sandbox";
    /// A module is larger than the runner accepts, or compiling it went past the compile
    /// limits (CPU time, memory).
    pub const MODULE_LIMIT: &str = "module_limit";
}

/// Why an execution failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ExecFailure {
    /// One of [`code`]: timeout | memory | trap | protocol | output_limit | exit_status |
    /// cancelled | digest | sandbox | module_limit.
    pub code: String,
    /// What happened, naming the step as `step N (name)` (N is the 0-based index).
    pub message: String,
    /// The 0-based index of the stage at fault, when one is.
    pub step: Option<usize>,
    /// Whether running the same execution again may succeed. True for non-zero exits
    /// (a source may be briefly down) and for runner-internal errors; false for limits,
    /// traps, protocol errors, digests and cancellations.
    pub retryable: bool,
}

impl ExecFailure {
    pub(crate) fn new(code: &str, message: impl Into<String>, step: Option<usize>, retryable: bool) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            step,
            retryable,
        }
    }

    pub(crate) fn at(step: usize, name: &str, code: &str, what: impl std::fmt::Display, retryable: bool) -> Self {
        Self::new(code, format!("step {step} ({name}): {what}"), Some(step), retryable)
    }

    pub(crate) fn cancelled() -> Self {
        Self::new(code::CANCELLED, "the execution was cancelled", None, false)
    }

    /// A runner-side error: worth retrying, perhaps on another runner.
    pub(crate) fn internal(step: Option<usize>, what: impl std::fmt::Display) -> Self {
        Self::new(code::SANDBOX, what.to_string(), step, true)
    }

    pub(crate) fn from_sandbox(step: usize, name: &str, err: &SandboxError) -> Self {
        match err {
            SandboxError::DigestMismatch { .. } => Self::at(step, name, code::DIGEST, err, false),
            SandboxError::Compile { .. } | SandboxError::Link { .. } => Self::at(step, name, code::SANDBOX, err, false),
            SandboxError::TooLarge { .. } | SandboxError::CompileLimit { .. } => {
                Self::at(step, name, code::MODULE_LIMIT, err, false)
            }
            SandboxError::CompileWallClock { .. } => Self::at(step, name, code::MODULE_LIMIT, err, true),
            SandboxError::Engine(_) | SandboxError::Internal(_) | SandboxError::WorkDir(_) => {
                Self::at(step, name, code::SANDBOX, err, true)
            }
        }
    }
}

/// How a task of the execution ended early.
#[derive(Debug)]
pub(crate) enum Stop {
    /// It failed; this is the reason.
    Failed(ExecFailure),
    /// It was stopped because the execution was aborted (someone else failed, or cancel).
    Aborted,
}

impl From<ExecFailure> for Stop {
    fn from(f: ExecFailure) -> Self {
        Stop::Failed(f)
    }
}

/// Shared by every task of one execution: the abort signal and the first failure.
#[derive(Clone)]
pub(crate) struct Control {
    abort: CancellationToken,
    first: Arc<Mutex<Option<ExecFailure>>>,
    redactor: Arc<Redactor>,
}

impl Control {
    /// `redactor` scrubs failure messages (they may quote what a plugin wrote).
    pub(crate) fn new(redactor: Arc<Redactor>) -> Self {
        Self {
            abort: CancellationToken::new(),
            first: Arc::new(Mutex::new(None)),
            redactor,
        }
    }

    /// Records `failure` (redacted) unless an earlier one is recorded, then aborts
    /// everything. Tasks call this before dropping their pipes, so a neighbour that trips
    /// over the closed pipe sees the abort and does not claim the blame.
    pub(crate) fn fail(&self, mut failure: ExecFailure) {
        if let std::borrow::Cow::Owned(redacted) = self.redactor.redact(&failure.message) {
            failure.message = redacted;
        }
        {
            let mut first = self.first.lock();
            if first.is_none() {
                tracing::debug!(code = %failure.code, message = %failure.message, "execution failing");
                *first = Some(failure);
            }
        }
        self.abort.cancel();
    }

    /// Reports a task's result: failures are recorded (aborts were caused by one).
    pub(crate) fn report<T>(&self, result: &Result<T, Stop>) {
        if let Err(Stop::Failed(f)) = result {
            self.fail(f.clone());
        }
    }

    pub(crate) fn abort_token(&self) -> &CancellationToken {
        &self.abort
    }

    pub(crate) fn is_aborted(&self) -> bool {
        self.abort.is_cancelled()
    }

    pub(crate) fn failure(&self) -> Option<ExecFailure> {
        self.first.lock().clone()
    }
}
