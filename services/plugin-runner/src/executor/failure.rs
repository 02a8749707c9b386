//! Why an execution failed, and the first-failure-wins slot the stages share.

use std::sync::Arc;

use flexcore_plugin_sdk::FailureKind;
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
    /// A stage exited with a non-zero status (or a process was killed by a signal); not
    /// retryable for the permanent sysexits statuses 64, 65, 66, 77 and 78. The message
    /// ends with the stage's last stderr line.
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
    /// outside the permanent sysexits statuses (a source may be briefly down) and for
    /// runner-internal errors; false for exits 64, 65, 66, 77 and 78 ([`FailureKind`]),
    /// limits, traps, protocol errors, digests and cancellations.
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

    /// A stage that exited with non-zero `status`: `exited with status 66 (no input)`,
    /// retryable unless the status is a permanent one of the sysexits convention
    /// ([`FailureKind::is_permanent`]).
    pub(crate) fn exited(step: usize, name: &str, status: i32) -> Self {
        let kind = FailureKind::from_exit_status(status);
        let what = match kind {
            Some(kind) if kind != FailureKind::Other => format!("exited with status {status} ({})", kind.describe()),
            _ => format!("exited with status {status}"),
        };
        let permanent = kind.is_some_and(FailureKind::is_permanent);
        Self::at(step, name, code::EXIT_STATUS, what, !permanent)
    }

    /// Appends the stage's last words (its last non-empty stderr line, already redacted)
    /// to the message, without the log level the plugin SDK and Singer taps put first:
    /// `…: exited with status 66 (no input): /in/a.csv: No such file or directory`.
    pub(crate) fn with_last_words(mut self, line: &str) -> Self {
        let line = line.trim();
        let words = match line.split_once(' ').unwrap_or((line, "")) {
            ("ERROR" | "CRITICAL" | "FATAL", rest) => rest.trim_start(),
            _ => line,
        };
        if !words.is_empty() {
            self.message = format!("{}: {words}", self.message);
        }
        self
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_exit_statuses_are_not_retryable_and_say_what_they_mean() {
        for (status, what) in [
            (64, "usage error"),
            (65, "data error"),
            (66, "no input"),
            (77, "permission denied"),
            (78, "config error"),
        ] {
            let f = ExecFailure::exited(0, "csv", status);
            assert!(!f.retryable, "{status}");
            assert_eq!(f.message, format!("step 0 (csv): exited with status {status} ({what})"));
        }
    }

    #[test]
    fn other_exit_statuses_stay_retryable() {
        let f = ExecFailure::exited(1, "jsonl", 75);
        assert!(f.retryable);
        assert_eq!(f.message, "step 1 (jsonl): exited with status 75 (temporary failure)");
        for status in [1, 2, 3, 74, 126, 255] {
            assert!(ExecFailure::exited(0, "p", status).retryable, "{status}");
        }
        assert_eq!(
            ExecFailure::exited(0, "p", 1).message,
            "step 0 (p): exited with status 1"
        );
    }

    #[test]
    fn the_last_words_follow_without_their_log_level() {
        let f = ExecFailure::exited(0, "csv", 66).with_last_words("ERROR /in/a.csv: No such file or directory\n");
        assert_eq!(
            f.message,
            "step 0 (csv): exited with status 66 (no input): /in/a.csv: No such file or directory"
        );
        let f = ExecFailure::exited(0, "tap", 1).with_last_words("Traceback: KeyError 'x'");
        assert_eq!(f.message, "step 0 (tap): exited with status 1: Traceback: KeyError 'x'");
        let f = ExecFailure::exited(0, "tap", 1).with_last_words("ERROR ");
        assert_eq!(f.message, "step 0 (tap): exited with status 1");
    }
}
