//! Runs ONE pipeline execution in-process: extractor → transformers → loader.
//!
//! Wiring: every stage's stdout is a bounded in-memory pipe (capacity
//! [`Defaults::pipe_capacity`](crate::sandbox::Defaults), 64 KiB) read directly by the next
//! stage, except on the last hop, where a host task relays the bytes unchanged into the
//! loader's stdin while validating and counting them (see `observe.rs`). The loader's
//! stdout is read by the host for checkpoints; every stage's stderr becomes log events.
//! The extractor's stdin is empty.
//!
//! Each stage and each host task is its own tokio task. The first failure wins: it is
//! recorded, then everything is aborted (wasm stores are interrupted through their epoch
//! callback, processes are killed with their group, pipes close), and `execute` returns
//! within about a second. Log and checkpoint readers drain to the end of their stream even
//! then, so a failing stage's last lines and a loader's last STATE are not lost.
//!
//! Secrets stay inside: the values resolved into the stages' configs ([`Stage::secrets`])
//! are scrubbed, in every encoding (`redact.rs`), from everything the execution reports —
//! log lines (before they are cut to length), checkpoints (STATE strings and stream
//! names), the summary's counters and failure messages. The stages' files live in the
//! runner's private work directory ([`crate::sandbox::WorkDir`]) and go with the execution.

mod failure;
mod json_strings;
mod lines;
mod logs;
mod observe;
mod pipe;
mod process;
mod redact;
mod stage;
mod wasm;

use std::sync::Arc;
use std::time::{Duration, Instant};

use flexcore_contracts::model::StreamCounters;
use flexcore_contracts::OpaqueJson;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use failure::{code, ExecFailure};
pub(crate) use json_strings::map_json_strings;
pub use redact::{Redactor, Secrets, REDACTED};
pub use stage::{is_runner_setting, Program, Stage};

use failure::{Control, Stop};
use observe::Ledger;
use pipe::{pipe, PipeReader};
use stage::{check_shape, prepare, Prepared, Runnable};

use crate::sandbox::Sandbox;

/// How long tasks get to wind down after an abort before they are dropped.
const ABORT_GRACE: Duration = Duration::from_secs(2);
/// How long a checkpoint may wait for room in the event channel once aborted.
const EMIT_GRACE: Duration = Duration::from_millis(250);
/// How long a stage that exited non-zero waits for its stderr forwarder to reach the last
/// line (it may be waiting for room in the event channel) before failing without it.
const LAST_WORDS_WAIT: Duration = Duration::from_secs(1);

/// What an execution reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecEvent {
    /// The loader echoed a STATE: everything before it is durable. Sent in order.
    Checkpoint {
        /// The STATE's `value`, exactly as the loader wrote it.
        state: OpaqueJson,
        /// Records per stream sent to the loader before that STATE (cumulative).
        counters: StreamCounters,
    },
    /// A line a stage wrote to stderr.
    Log {
        /// The stage's 0-based index.
        step: usize,
        /// The stage's name.
        plugin: String,
        /// The line (lossy UTF-8, secrets redacted, at most `max_log_line_bytes` of the
        /// original plus a redaction and a truncation mark).
        line: String,
    },
}

/// How a successful execution went.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecSummary {
    /// Records per stream received by the loader.
    pub counters: StreamCounters,
    /// The loader's last STATE, if it echoed any.
    pub last_state: Option<OpaqueJson>,
    /// Wall-clock time of the whole execution.
    pub duration: Duration,
}

/// Sends events without letting a slow consumer hold up an abort.
#[derive(Clone)]
pub(crate) struct Emitter {
    tx: mpsc::Sender<ExecEvent>,
    abort: CancellationToken,
    redactor: Arc<Redactor>,
}

impl Emitter {
    /// The execution's redactor (log lines are redacted before they are cut, by their reader).
    pub(crate) fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Waits for room in the channel until the execution is aborted; after that, a
    /// `patient` event (a checkpoint) still waits briefly, a log line does not. A
    /// checkpoint's STATE strings and stream names are redacted here.
    pub(crate) async fn emit(&self, event: ExecEvent, patient: bool) {
        let event = match event {
            ExecEvent::Checkpoint { state, counters } if self.redactor.is_active() => ExecEvent::Checkpoint {
                state: self.redactor.redact_json(&state),
                counters: self.redactor.redact_counters(counters),
            },
            other => other,
        };
        let permit = tokio::select! {
            biased;
            permit = self.tx.reserve() => permit.ok(),
            () = self.abort.cancelled() => None,
        };
        let permit = match permit {
            Some(permit) => Some(permit),
            None if self.tx.is_closed() => None,
            None if patient => tokio::time::timeout(EMIT_GRACE, self.tx.reserve())
                .await
                .ok()
                .and_then(Result::ok),
            None => self.tx.try_reserve().ok(),
        };
        if let Some(permit) = permit {
            permit.send(event);
        }
    }
}

/// What a task hands back to `execute`.
enum Output {
    Done,
    Counters(StreamCounters),
    LastState(Option<OpaqueJson>),
}

/// Runs `stages` (extractor, transformers…, loader) to completion, the first failure, or
/// `cancel`. `state` is passed to the extractor as `--state`. Checkpoints and log lines
/// are sent on `events` while it runs; a failed execution has still sent every checkpoint
/// its loader confirmed.
#[tracing::instrument(skip_all, fields(stages = stages.len()))]
pub async fn execute(
    sandbox: &Sandbox,
    stages: Vec<Stage>,
    state: Option<OpaqueJson>,
    events: mpsc::Sender<ExecEvent>,
    cancel: CancellationToken,
) -> Result<ExecSummary, ExecFailure> {
    let started = Instant::now();
    check_shape(&stages, sandbox)?;
    let redactor = Arc::new(Redactor::new(
        stages.iter().flat_map(|s| s.secrets.values()).map(String::as_str),
    ));
    let root = sandbox
        .work_dir()
        .execution_dir()
        .map_err(|e| ExecFailure::internal(None, format!("cannot create a work directory: {e}")))?;
    let mut prepared = Vec::with_capacity(stages.len());
    for (index, stage) in stages.into_iter().enumerate() {
        tokio::select! {
            stage = prepare(sandbox, index, stage, state.as_ref(), root.path())
                .instrument(tracing::info_span!("stage.prepare", step = index)) => prepared.push(stage?),
            () = cancel.cancelled() => return Err(ExecFailure::cancelled()),
        }
    }

    let ctl = Control::new(Arc::clone(&redactor));
    let emitter = Emitter {
        tx: events,
        abort: ctl.abort_token().clone(),
        redactor: Arc::clone(&redactor),
    };
    let mut tasks = spawn_all(sandbox, prepared, &ctl, &emitter);

    let (mut counters, mut last_state, mut wind_down) = (None, None, None::<tokio::time::Instant>);
    loop {
        let grace = async {
            match wind_down {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(Output::Counters(c)))) => counters = Some(c),
                Some(Ok(Ok(Output::LastState(s)))) => last_state = s,
                // Failures were reported by the task itself, before its pipes closed.
                Some(Ok(Ok(Output::Done) | Err(_))) => {}
                Some(Err(e)) => ctl.fail(ExecFailure::internal(None, format!("an execution task died: {e}"))),
            },
            () = cancel.cancelled(), if !ctl.is_aborted() => ctl.fail(ExecFailure::cancelled()),
            () = grace => {
                tracing::warn!(left = tasks.len(), "execution tasks did not stop in time; dropping them");
                tasks.abort_all();
                break;
            }
        }
        if ctl.is_aborted() && wind_down.is_none() {
            wind_down = Some(tokio::time::Instant::now() + ABORT_GRACE);
        }
    }
    if let Some(failure) = ctl.failure() {
        return Err(failure);
    }
    Ok(ExecSummary {
        counters: redactor.redact_counters(counters.unwrap_or_default()),
        last_state: last_state.map(|s| redactor.redact_json(&s)),
        duration: started.elapsed(),
    })
}

/// Creates the pipes and starts one task per stage plus the host's readers.
fn spawn_all(
    sandbox: &Sandbox,
    prepared: Vec<Prepared>,
    ctl: &Control,
    emitter: &Emitter,
) -> JoinSet<Result<Output, Stop>> {
    let defaults = sandbox.defaults().clone();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let n = prepared.len();
    let mut tasks = JoinSet::new();
    let mut next_stdin: Option<PipeReader> = None;
    for stage in prepared {
        let i = stage.index;
        let stdin = next_stdin.take();
        let (stdout, stdout_reader) = pipe(defaults.pipe_capacity, stage.limits.max_stdout_bytes);
        let (stderr, stderr_reader) = pipe(defaults.pipe_capacity, stage.limits.max_stderr_bytes);

        let (events, name) = (emitter.clone(), stage.name.clone());
        let (max_line, per_second) = (defaults.max_log_line_bytes, defaults.log_lines_per_second);
        let (last_words_tx, last_words) = tokio::sync::oneshot::channel();
        tasks.spawn(async move {
            let last = logs::forward(stderr_reader, i, &name, &events, max_line, per_second).await;
            let _ = last_words_tx.send(last);
            Ok(Output::Done)
        });

        let (max_message, max_state) = (defaults.max_message_bytes, defaults.max_state_bytes);
        let interval = defaults.checkpoint_interval;
        if i + 2 == n {
            let (relay_in, relay_out) = pipe(defaults.pipe_capacity, u64::MAX);
            next_stdin = Some(relay_out);
            let (ctl, ledger, name) = (ctl.clone(), Arc::clone(&ledger), stage.name.clone());
            tasks.spawn(async move {
                let result = tokio::select! {
                    result = observe::relay(&stdout_reader, &relay_in, (i, &name), &ledger, (max_message, max_state)) => result,
                    () = ctl.abort_token().cancelled() => Err(Stop::Aborted),
                };
                ctl.report(&result);
                drop((stdout_reader, relay_in));
                result.map(Output::Counters)
            });
        } else if i + 1 == n {
            let (ctl, ledger, events, name) = (ctl.clone(), Arc::clone(&ledger), emitter.clone(), stage.name.clone());
            tasks.spawn(async move {
                // Not raced with the abort: a STATE the loader managed to echo is progress.
                let limits = (max_message, max_state, interval);
                let result = observe::checkpoints(&stdout_reader, (i, &name), &ledger, &events, limits).await;
                ctl.report(&result);
                drop(stdout_reader);
                result.map(Output::LastState)
            });
        } else {
            next_stdin = Some(stdout_reader);
        }

        let (ctl, engine, wrap) = (ctl.clone(), sandbox.engine().clone(), sandbox.process_wrap().clone());
        let (fuel_metering, max_memory_bytes) = (sandbox.config().fuel_metering, sandbox.config().max_memory_bytes);
        // Spawned tasks do not inherit the current span: each stage is one, under `execute`.
        let span = tracing::info_span!("stage", step = i, plugin = %stage.name);
        let stage_task = async move {
            let abort = ctl.abort_token().clone();
            let result = match &stage.runnable {
                Runnable::Wasm(module) => {
                    let wasm = wasm::Wasm {
                        engine: &engine,
                        module,
                        fuel_metering,
                        max_memory_bytes,
                    };
                    let io = wasm::Stdio {
                        stdin: stdin.as_ref(),
                        stdout: &stdout,
                        stderr: &stderr,
                    };
                    wasm::run(&stage, wasm, io, &abort).await
                }
                Runnable::Process { executable, args } => {
                    let io = (stdin.as_ref(), &stdout, &stderr);
                    process::run(&stage, &wrap, executable, args, io, &abort).await
                }
            };
            // A plugin that exited non-zero said why on stderr: its last line goes into the
            // failure. Only stderr closes first (its forwarder then ends); the neighbours'
            // pipes stay open until the failure is recorded, so they do not take the blame.
            let result = match result {
                Err(Stop::Failed(failure)) if failure.code == code::EXIT_STATUS => {
                    drop(stderr);
                    let last = tokio::time::timeout(LAST_WORDS_WAIT, last_words).await;
                    match last {
                        Ok(Ok(Some(line))) => Err(Stop::Failed(failure.with_last_words(&line))),
                        _ => Err(Stop::Failed(failure)),
                    }
                }
                other => {
                    drop(stderr);
                    other
                }
            };
            ctl.report(&result);
            drop((stdin, stdout));
            result.map(|()| Output::Done)
        };
        tasks.spawn(stage_task.instrument(span));
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::SandboxConfig;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn an_execution_can_be_spawned() {
        let sandbox = Sandbox::new(SandboxConfig {
            pooling: false,
            ..Default::default()
        })
        .unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let execution = execute(&sandbox, Vec::new(), None, tx, CancellationToken::new());
        assert_send(&execution);
    }
}
