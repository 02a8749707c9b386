//! WASI calls the sandbox refuses although wasmtime-wasi offers them.
//!
//! `path_symlink`: inside a read-write directory grant a guest could otherwise create
//! symlinks to anywhere on the host. The guest itself cannot follow them out of its grant,
//! but they stay behind for the host's own processes (a backup, a later process plugin,
//! an operator's shell) to follow. Refused with `EPERM` before anything touches the disk.

use wasmtime::{Caller, Linker};

use super::{SandboxError, StageState};

/// WASI preview 1 `errno` "operation not permitted".
const ERRNO_PERM: i32 = 63;

/// Replaces `wasi_snapshot_preview1.path_symlink` in `linker` with a refusal.
pub(crate) fn shadow_symlinks(linker: &mut Linker<StageState>) -> Result<(), SandboxError> {
    linker.allow_shadowing(true);
    linker
        .func_wrap(
            "wasi_snapshot_preview1",
            "path_symlink",
            |_: Caller<'_, StageState>, _old: i32, _old_len: i32, _fd: i32, _new: i32, _new_len: i32| ERRNO_PERM,
        )
        .map_err(|e| SandboxError::Engine(format!("cannot shadow path_symlink: {e}")))?;
    linker.allow_shadowing(false);
    Ok(())
}
