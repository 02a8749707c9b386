//! One wasm stage: a fresh store from the cached `InstancePre`, deny-by-default WASI, and
//! the limits wasmtime enforces (memory, epoch deadline, fuel, output caps).

use std::path::Path;
use std::time::Instant;

use flexcore_contracts::model::DirAccess;
use tokio_util::sync::CancellationToken;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use super::failure::{code, ExecFailure, Stop};
use super::pipe::{PipeReader, PipeWriter};
use super::stage::{Prepared, GUEST_DIR};
use crate::sandbox::{CompiledModule, StageState, MAX_TABLE_ELEMENTS};

/// The stage's stdio ends, owned by its task.
pub(crate) struct Stdio<'a> {
    pub(crate) stdin: Option<&'a PipeReader>,
    pub(crate) stdout: &'a PipeWriter,
    pub(crate) stderr: &'a PipeWriter,
}

/// What a wasm stage needs from the sandbox.
pub(crate) struct Wasm<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) module: &'a CompiledModule,
    pub(crate) fuel_metering: bool,
    pub(crate) max_memory_bytes: u64,
}

/// Runs `_start` to completion, a failure, the stage's deadline or an abort.
pub(crate) async fn run(
    stage: &Prepared,
    wasm: Wasm<'_>,
    io: Stdio<'_>,
    abort: &CancellationToken,
) -> Result<(), Stop> {
    let fail =
        |code: &str, what: String, retryable: bool| ExecFailure::at(stage.index, &stage.name, code, what, retryable);
    let wasi = wasi_ctx(stage, &io)?;
    let memory = stage.limits.memory_bytes.min(wasm.max_memory_bytes);
    let state = StageState::new(wasi, usize::try_from(memory).unwrap_or(usize::MAX));
    let mut store = Store::try_new(wasm.engine, state)
        .map_err(|e| ExecFailure::internal(Some(stage.index), format!("cannot create a store: {e}")))?;
    store.limiter(|s| &mut s.limiter);
    if wasm.fuel_metering {
        store
            .set_fuel(stage.limits.fuel.unwrap_or(u64::MAX))
            .map_err(|e| ExecFailure::internal(Some(stage.index), format!("cannot set fuel: {e}")))?;
    }
    let deadline = Instant::now() + stage.limits.timeout;
    let interrupt = abort.clone();
    // Every tick: stop for an abort or the deadline, otherwise yield to tokio and re-arm.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |mut ctx| {
        if interrupt.is_cancelled() {
            return Ok(UpdateDeadline::Interrupt);
        }
        if Instant::now() >= deadline {
            ctx.data_mut().timed_out = true;
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::Yield(1))
    });

    // Instantiation runs the module's start section, which may spin (the epoch callback
    // stops it) or park in a host call such as `poll_oneoff` (only this select can): it
    // is under the same deadline and abort as `_start`.
    let outcome = {
        let pre = wasm.module.pre();
        let guest = async {
            let instance = pre.instantiate_async(&mut store).await.map_err(Guest::Instantiate)?;
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .map_err(|_| Guest::NoStart)?;
            start.call_async(&mut store, ()).await.map_err(Guest::Run)
        };
        // The sleep covers a guest parked in a host call (waiting on a pipe, sleeping),
        // where no epoch check runs; the epoch callback covers a guest that never leaves
        // wasm.
        tokio::select! {
            result = guest => Some(result),
            () = abort.cancelled() => return Err(Stop::Aborted),
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => None,
        }
    };
    let timeout = || {
        fail(
            code::TIMEOUT,
            format!("exceeded its wall-clock limit of {:?}", stage.limits.timeout),
            false,
        )
    };
    let err = match outcome {
        None => return Err(timeout().into()),
        Some(Ok(())) => return Ok(()),
        Some(Err(Guest::NoStart)) => {
            return Err(fail(
                code::SANDBOX,
                "is not a WASI command module (no `_start` export)".into(),
                false,
            )
            .into())
        }
        Some(Err(Guest::Run(err))) => err,
        // The start section trapped, exited or was interrupted: judged like `_start`.
        Some(Err(Guest::Instantiate(err)))
            if err.downcast_ref::<Trap>().is_some() || err.downcast_ref::<I32Exit>().is_some() =>
        {
            err
        }
        Some(Err(Guest::Instantiate(err))) if store.data().limiter.exceeded => {
            let what = format!("needs more than its memory limit of {memory} bytes");
            let what = format!("{what} (or {MAX_TABLE_ELEMENTS} table elements): {err}");
            return Err(fail(code::MEMORY, what, false).into());
        }
        Some(Err(Guest::Instantiate(_))) if abort.is_cancelled() => return Err(Stop::Aborted),
        Some(Err(Guest::Instantiate(err))) if store.data().timed_out => {
            tracing::debug!(step = stage.index, error = ?err, "start section timed out");
            return Err(timeout().into());
        }
        // Most likely the pool is exhausted: another runner (or later) may do.
        Some(Err(Guest::Instantiate(err))) => {
            return Err(fail(code::SANDBOX, format!("cannot be instantiated: {err:#}"), true).into())
        }
    };
    if let Some(I32Exit(status)) = err.downcast_ref::<I32Exit>() {
        if *status == 0 {
            return Ok(());
        }
        if abort.is_cancelled() {
            return Err(Stop::Aborted);
        }
        if io.stdout.reader_closed() {
            return Err(closed_early(stage).into());
        }
        return Err(ExecFailure::exited(stage.index, &stage.name, *status).into());
    }
    if abort.is_cancelled() {
        return Err(Stop::Aborted);
    }
    let failure = if io.stdout.limit_exceeded() {
        fail(
            code::OUTPUT_LIMIT,
            format!("wrote more than its stdout cap of {} bytes", io.stdout.limit()),
            false,
        )
    } else if io.stderr.limit_exceeded() {
        fail(
            code::OUTPUT_LIMIT,
            format!("wrote more than its stderr cap of {} bytes", io.stderr.limit()),
            false,
        )
    } else if store.data().limiter.exceeded {
        fail(
            code::MEMORY,
            format!("exceeded its memory limit of {memory} bytes (or {MAX_TABLE_ELEMENTS} table elements)"),
            false,
        )
    } else if store.data().timed_out {
        timeout()
    } else if matches!(err.downcast_ref::<Trap>(), Some(Trap::OutOfFuel)) {
        fail(
            code::TIMEOUT,
            format!("exhausted its fuel budget of {}", stage.limits.fuel.unwrap_or(u64::MAX)),
            false,
        )
    } else if io.stdout.reader_closed() {
        closed_early(stage)
    } else {
        tracing::debug!(step = stage.index, error = ?err, "wasm stage trapped");
        fail(code::TRAP, format!("trapped: {}", err.root_cause()), false)
    };
    Err(failure.into())
}

/// Where running the guest failed.
enum Guest {
    /// Instantiation, including the start section.
    Instantiate(wasmtime::Error),
    /// No `_start` export.
    NoStart,
    /// `_start`.
    Run(wasmtime::Error),
}

/// The next stage stopped reading, so this one could not write: the next stage is at fault.
pub(crate) fn closed_early(stage: &Prepared) -> ExecFailure {
    let next = stage.index + 1;
    ExecFailure::new(
        code::PROTOCOL,
        format!(
            "step {next} stopped reading its input before step {} ({}) finished writing",
            stage.index, stage.name
        ),
        Some(next),
        false,
    )
}

/// Deny by default: stdio pipes, Singer args, the stage's read-only config directory at
/// `/flexcore`, granted env names and granted directories; nothing else.
fn wasi_ctx(stage: &Prepared, io: &Stdio<'_>) -> Result<WasiP1Ctx, ExecFailure> {
    let mut builder = WasiCtxBuilder::new();
    match io.stdin {
        Some(stdin) => builder.stdin(stdin.wasi()),
        None => builder.stdin(tokio::io::empty()),
    };
    builder.stdout(io.stdout.wasi()).stderr(io.stderr.wasi());
    let mut args = vec![stage.name.clone()];
    args.extend(stage.singer_args(Path::new(GUEST_DIR)));
    builder.args(&args);
    for (name, value) in &stage.env {
        // WASI environment values are strings: a value that is not UTF-8 is left out.
        if let Some(value) = value.to_str() {
            builder.env(name, value);
        }
    }
    builder
        .preopened_dir(&stage.dir, GUEST_DIR, FsPerms::ReadOnly)
        .map_err(|e| ExecFailure::internal(Some(stage.index), format!("cannot preopen the config directory: {e}")))?;
    for grant in &stage.grants.dirs {
        let perms = match grant.access {
            DirAccess::ReadOnly => FsPerms::ReadOnly,
            DirAccess::ReadWrite => FsPerms::ReadWrite,
        };
        builder
            .preopened_dir(&grant.host_path, &grant.guest_path, perms)
            .map_err(|e| {
                ExecFailure::at(
                    stage.index,
                    &stage.name,
                    code::SANDBOX,
                    format!("granted directory {} cannot be opened: {e}", grant.host_path),
                    false,
                )
            })?;
    }
    Ok(builder.build_p1())
}
