//! One native stage (the `process` runtime): NOT sandboxed, but wired, capped and timed
//! like a wasm stage. Where the host allows it the stage is pid 1 of its own PID
//! namespace, so every descendant dies with it, runs as an unprivileged user when the
//! runner is root, and gets its rlimits before `exec` (see
//! [`ProcessWrap`](crate::sandbox::ProcessWrap)). It also leads its own process group,
//! killed as a whole; its environment holds only the granted names.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;

use bytes::BytesMut;
use rustix::process::{kill_process_group, prlimit, Pid, Resource, Rlimit, Signal};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::failure::{code, ExecFailure, Stop};
use super::pipe::{PipeReader, PipeWriter, WriteError};
use super::stage::Prepared;
use super::wasm::closed_early;
use crate::sandbox::ProcessWrap;

const READ_BUFFER: usize = 64 << 10;

/// SIGKILLs the whole group when dropped: on success (stragglers), failure and abort alike.
struct GroupKiller(Option<Pid>);

impl GroupKiller {
    fn kill(&self) {
        if let Some(pid) = self.0 {
            // ESRCH once everyone is gone: nothing to do.
            let _ = kill_process_group(pid, Signal::KILL);
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the executable until it exits and its output is drained, a cap is crossed, its
/// deadline passes or the execution is aborted.
pub(crate) async fn run(
    stage: &Prepared,
    wrap: &ProcessWrap,
    executable: &Path,
    args: &[String],
    (stdin, stdout, stderr): (Option<&PipeReader>, &PipeWriter, &PipeWriter),
    abort: &CancellationToken,
) -> Result<(), Stop> {
    let fail =
        |code: &str, what: String, retryable: bool| ExecFailure::at(stage.index, &stage.name, code, what, retryable);
    let deadline = tokio::time::Instant::now() + stage.limits.timeout;
    let (program, wrapper_args) = wrap.command(executable, stage.limits.memory_bytes);
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = wrap.spawn_as() {
        cmd.uid(uid).gid(gid);
    }
    cmd.args(wrapper_args)
        .args(args)
        .args(stage.singer_args(&stage.dir))
        .current_dir(&stage.dir)
        .env_clear()
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (name, value) in &stage.env {
        cmd.env(name, value);
    }
    let mut child = cmd.spawn().map_err(|e| {
        fail(
            code::SANDBOX,
            format!("cannot start {}: {e}", executable.display()),
            false,
        )
    })?;
    let group = GroupKiller(child.id().and_then(|id| i32::try_from(id).ok()).and_then(Pid::from_raw));
    if let (Some(pid), false) = (group.0, wrap.limits_before_exec()) {
        // Without prlimit, set just after spawn (no pre_exec without unsafe): a child could
        // allocate a little before it applies. RLIMIT_DATA rather than RLIMIT_AS, which
        // breaks runtimes that reserve large address ranges.
        let limit = Rlimit {
            current: Some(stage.limits.memory_bytes),
            maximum: Some(stage.limits.memory_bytes),
        };
        if let Err(e) = prlimit(Some(pid), Resource::Data, limit) {
            tracing::warn!(step = stage.index, error = %e, "cannot apply the memory rlimit to a process stage");
        }
    }

    let (child_in, child_out, child_err) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let pumps = async {
        let (_, out, err) = tokio::join!(feed(stdin, child_in), pump(child_out, stdout), pump(child_err, stderr));
        out.map_err(|e| (e, "stdout", stdout.limit()))?;
        err.map_err(|e| (e, "stderr", stderr.limit()))
    };
    tokio::pin!(pumps);
    let wait = child.wait();
    tokio::pin!(wait);
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    let (mut status, mut drained) = (None, false);
    loop {
        tokio::select! {
            exited = &mut wait, if status.is_none() => {
                let exited = exited.map_err(|e| ExecFailure::internal(Some(stage.index), format!("cannot wait for the process: {e}")))?;
                // Stragglers would keep the pipes open and the pumps waiting.
                group.kill();
                status = Some(exited);
            }
            pumped = &mut pumps, if !drained => {
                drained = true;
                if let Err((_, stream, limit)) = pumped {
                    return Err(fail(code::OUTPUT_LIMIT, format!("wrote more than its {stream} cap of {limit} bytes"), false).into());
                }
            }
            () = abort.cancelled() => return Err(Stop::Aborted),
            () = &mut sleep => {
                return Err(fail(code::TIMEOUT, format!("exceeded its wall-clock limit of {:?}", stage.limits.timeout), false).into());
            }
        }
        if drained {
            if let Some(status) = status {
                if status.success() {
                    return Ok(());
                }
                if abort.is_cancelled() {
                    return Err(Stop::Aborted);
                }
                if stdout.reader_closed() {
                    return Err(closed_early(stage).into());
                }
                let what = match (status.code(), status.signal()) {
                    (Some(code @ (126 | 127)), _) if wrap.run_as.is_some() => {
                        let (uid, _) = wrap.run_as.unwrap_or_default();
                        format!(
                            "exited with status {code}: is {} (and its interpreter) executable by uid {uid} \
                             (runner.process_uid)?",
                            executable.display()
                        )
                    }
                    (Some(code), _) => return Err(ExecFailure::exited(stage.index, &stage.name, code).into()),
                    (None, Some(signal)) => format!("was killed by signal {signal}"),
                    (None, None) => format!("ended with {status}"),
                };
                return Err(fail(code::EXIT_STATUS, what, true).into());
            }
        }
    }
}

/// Copies the stage's input into the child's stdin; closing it at end of stream.
async fn feed(input: Option<&PipeReader>, sink: Option<tokio::process::ChildStdin>) {
    let (Some(input), Some(mut sink)) = (input, sink) else {
        return;
    };
    while let Some(chunk) = input.chunk().await {
        if sink.write_all(&chunk).await.is_err() {
            // The child closed its stdin; the stage before learns when this stage ends.
            return;
        }
    }
}

/// Copies a child's output into a pipe; `Err` when the pipe's cap is crossed. A closed
/// pipe (the next stage stopped reading) ends the copy, so the child gets EPIPE/SIGPIPE.
async fn pump(source: Option<impl AsyncRead + Unpin>, sink: &PipeWriter) -> Result<(), WriteError> {
    let Some(mut source) = source else { return Ok(()) };
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    loop {
        buf.reserve(READ_BUFFER);
        match source.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
        match sink.write(buf.split().freeze()).await {
            Ok(()) => {}
            Err(WriteError::Closed) => return Ok(()),
            Err(WriteError::LimitExceeded) => return Err(WriteError::LimitExceeded),
        }
    }
}
