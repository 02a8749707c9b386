//! `flexctl dev` and `flexctl bench`: commands of the `flexcore-dev` binary (crate
//! `cli/flexcore-dev`), which flexctl becomes when given one of them.
//!
//! The benchmarks run plugins in the wasmtime sandbox and write to Postgres, and the dev
//! supervisor creates databases and starts servers: an operator's CLI that only speaks
//! NATS need link none of that. flexctl replaces itself (`exec`) with `flexcore-dev`
//! found next to it, else on PATH, keeping its process id (Ctrl-C and the SIGTERM of a
//! script reach the supervisor itself), its environment and its whole command line,
//! global options included, as the name it was started by (so help and errors name the
//! command that was typed).

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

use clap::Args;

/// The binary that runs `dev` and `bench`.
pub const BINARY: &str = "flexcore-dev";

/// The arguments of `flexctl dev` or `flexctl bench`, left for `flexcore-dev` to parse.
#[derive(Debug, Clone, Args)]
pub struct Forwarded {
    /// Options and subcommands of flexcore-dev's `dev` or `bench` (`--help` lists them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<OsString>,
}

/// Replaces this process with `flexcore-dev`, given `args` (this process's own command
/// line: its first item is the name it is given). Returns only on failure.
pub fn exec(args: impl IntoIterator<Item = OsString>) -> anyhow::Error {
    let mut args = args.into_iter();
    let name = args.next().unwrap_or_else(|| OsString::from("flexctl"));
    let Some(binary) = find(BINARY) else {
        let here = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .map_or_else(|| "flexctl's directory".to_owned(), |dir| dir.display().to_string());
        return anyhow::anyhow!(
            "`flexctl dev` and `flexctl bench` are run by {BINARY}, which is neither in {here} nor on PATH: \
             build it next to flexctl with `cargo build --release -p {BINARY}` (scripts/dev.sh does)"
        );
    };
    let error = std::process::Command::new(&binary).arg0(name).args(args).exec();
    anyhow::anyhow!("cannot run {}: {error}", binary.display())
}

/// `name` next to this executable, else on PATH.
fn find(name: &str) -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|path| path.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
    })
}
