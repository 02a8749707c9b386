//! `flexcore`: every FlexCore binary in one, chosen by the name it is started as (a
//! multi-call binary, like busybox). The container image ships it once with a link per
//! name (`flexcore-command`, `flexcore-projection`, `flexcore-scheduler`,
//! `flexcore-runner`, `flexcore-gateway`, `flexctl` → `flexcore`): six separate binaries
//! each carried their own copy of tokio, sqlx, async-nats, rustls, wasmtime…, 171 MB
//! stripped; one carries them once (docs/benchmarks.md, "Container images").
//!
//! Each program is its own `main.rs`, included here unchanged (`#[path]`), so the
//! separate binaries and this one run the same code. The runner's compile check re-runs
//! the runner's executable (this one) with `__flexcore-compile-check` as its first
//! argument, whatever its name.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{ExitCode, Termination as _};

// The command service's allocator (see its main.rs), for every program here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../../command-service/src/main.rs"]
mod command;
#[path = "../../../cli/flexctl/src/main.rs"]
mod flexctl_main;
#[path = "../../gateway/src/main.rs"]
mod gateway;
#[path = "../../projection-service/src/main.rs"]
mod projection;
#[path = "../../plugin-runner/src/main.rs"]
mod runner;
#[path = "../../scheduler/src/main.rs"]
mod scheduler;

/// A program's `main`, its outcome as an exit code.
type Main = fn() -> ExitCode;

/// The names this binary answers to, and what each runs.
const PROGRAMS: [(&str, Main); 6] = [
    ("flexcore-command", || command::main().report()),
    ("flexcore-projection", || projection::main().report()),
    ("flexcore-scheduler", || scheduler::main().report()),
    ("flexcore-runner", || runner::main().report()),
    ("flexcore-gateway", || gateway::main().report()),
    ("flexctl", flexctl_main::main),
];

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let name = args
        .next()
        .as_deref()
        .and_then(|arg0| Path::new(arg0).file_name().map(OsStr::to_owned))
        .unwrap_or_default();
    let name = name.to_string_lossy();
    if args.next().as_deref() == Some(OsStr::new(flexcore_runner::sandbox::COMPILE_CHECK_ARG)) {
        return runner::main().report();
    }
    match PROGRAMS.iter().find(|(program, _)| *program == name) {
        Some((_, run)) => run(),
        None => {
            let names: Vec<&str> = PROGRAMS.iter().map(|(program, _)| *program).collect();
            eprintln!(
                "error: `{name}` is not a FlexCore program: this multi-call binary runs as one of {} \
                 (a link to it by that name, e.g. `ln -s flexcore flexcore-command`)",
                names.join(", ")
            );
            ExitCode::from(2)
        }
    }
}
