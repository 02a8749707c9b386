//! Compilation under limits.
//!
//! wasmtime cannot interrupt a compilation, and Cranelift's time is superlinear in some
//! shapes of code: a 1.5 MB module can keep every core busy for a minute. So before the
//! runner compiles a module it has not compiled before, the module is compiled in a
//! short-lived child process (the runner's own binary run with [`COMPILE_CHECK_ARG`]),
//! single-threaded, under RLIMIT_CPU and RLIMIT_AS and a wall-clock kill. Only a module
//! that compiled there within the limits is compiled in the runner (on a blocking thread,
//! at most [`CompileLimits::concurrency`] at once), which then takes about as long again
//! at most. A module refused by the check is remembered by digest and never compiled
//! again by this runner.
//!
//! The child's artifact is thrown away rather than loaded: loading a serialized module
//! (`Module::deserialize`) is `unsafe`, which the workspace forbids.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{setrlimit, Resource, Rlimit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmtime::{Config, Engine, Module};

use super::SandboxError;

/// First argument that turns the runner binary into the compile check (see
/// [`run_compile_check_if_asked`]).
pub const COMPILE_CHECK_ARG: &str = "__flexcore-compile-check";

/// Most stderr read back from a check, in bytes.
const MAX_CHECK_MESSAGE: usize = 4 << 10;

/// Bounds on what a module may cost before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileLimits {
    /// Largest module accepted, in bytes (64 MiB).
    pub max_module_bytes: u64,
    /// CPU time a module may take to compile, single-threaded (30 s). The check is also
    /// killed after this plus a second of wall-clock time (on a busy host that refusal is
    /// not remembered: the run may be retried).
    pub timeout: Duration,
    /// Address space of the compile check, in bytes (4 GiB).
    pub memory_bytes: u64,
    /// Compilations (checks included) running at once (1).
    pub concurrency: usize,
    /// The executable run as the compile check: the runner binary, which answers
    /// [`COMPILE_CHECK_ARG`]. `None` compiles in-process with no time or memory bound
    /// (tests and tools that embed the sandbox; never a production runner).
    pub checker: Option<PathBuf>,
}

impl Default for CompileLimits {
    fn default() -> Self {
        Self {
            max_module_bytes: 64 << 20,
            timeout: Duration::from_secs(30),
            memory_bytes: 4 << 30,
            concurrency: 1,
            checker: None,
        }
    }
}

/// The engine settings that change generated code, passed to the check so it compiles
/// what the runner would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CodegenFlags {
    pub(crate) fuel: bool,
    pub(crate) memory_reservation: u64,
}

impl CodegenFlags {
    pub(crate) fn apply(self, config: &mut Config) {
        config
            .epoch_interruption(true)
            .consume_fuel(self.fuel)
            .memory_reservation(self.memory_reservation);
    }
}

/// Compiles `bytes` in a child process under `limits`; `Ok` if it compiled in time.
pub(crate) async fn check(
    limits: &CompileLimits,
    checker: &std::path::Path,
    flags: CodegenFlags,
    digest: &str,
    bytes: &[u8],
) -> Result<(), SandboxError> {
    let cpu = limits.timeout.as_secs().max(1);
    let mut child = tokio::process::Command::new(checker)
        .arg(COMPILE_CHECK_ARG)
        .arg(cpu.to_string())
        .arg(limits.memory_bytes.to_string())
        .arg(if flags.fuel { "1" } else { "0" })
        .arg(flags.memory_reservation.to_string())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SandboxError::Internal(format!("cannot start the compile check {}: {e}", checker.display())))?;
    let (stdin, stderr) = (child.stdin.take(), child.stderr.take());
    let feed = async {
        if let Some(mut stdin) = stdin {
            // A child that died early closes the pipe: its status says why.
            let _ = stdin.write_all(bytes).await;
        }
    };
    let read = async {
        let mut message = Vec::new();
        if let Some(stderr) = stderr {
            let _ = stderr.take(MAX_CHECK_MESSAGE as u64).read_to_end(&mut message).await;
        }
        String::from_utf8_lossy(&message).trim().to_owned()
    };
    let wall = limits.timeout + Duration::from_secs(1);
    let ran = tokio::time::timeout(wall, async {
        let ((), message, status) = tokio::join!(feed, read, child.wait());
        (message, status)
    })
    .await;
    let over_time = || SandboxError::CompileLimit {
        digest: digest.to_owned(),
        message: format!(
            "did not compile within its limit of {} s of CPU time",
            limits.timeout.as_secs()
        ),
    };
    let (message, status) = match ran {
        Ok(done) => done,
        Err(_) => {
            let _ = child.start_kill();
            return Err(SandboxError::CompileWallClock {
                digest: digest.to_owned(),
                message: format!(
                    "did not compile within {} s of wall-clock time (the host may be busy)",
                    wall.as_secs()
                ),
            });
        }
    };
    let status = status.map_err(|e| SandboxError::Internal(format!("cannot wait for the compile check: {e}")))?;
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(2), _) => Err(SandboxError::Compile {
            digest: digest.to_owned(),
            message,
        }),
        // SIGXCPU at the soft CPU limit, SIGKILL at the hard one.
        (_, Some(24 | 9)) => Err(over_time()),
        _ if message.contains("memory allocation") || message.contains("out of memory") => {
            Err(SandboxError::CompileLimit {
                digest: digest.to_owned(),
                message: format!(
                    "needs more than the compile memory limit of {} bytes",
                    limits.memory_bytes
                ),
            })
        }
        _ => Err(SandboxError::CompileLimit {
            digest: digest.to_owned(),
            message: format!("the compile check ended with {status}: {message}"),
        }),
    }
}

/// When the process was started as the compile check (first argument
/// [`COMPILE_CHECK_ARG`]), runs it and returns its exit code; otherwise `None`. Call it
/// first thing in `main`, before any runtime starts.
pub fn run_compile_check_if_asked() -> Option<i32> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some(COMPILE_CHECK_ARG) {
        return None;
    }
    let args: Vec<String> = args.collect();
    Some(match compile_check(&args) {
        Ok(()) => 0,
        Err((code, message)) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "{message}");
            code
        }
    })
}

/// `<cpu seconds> <address space bytes> <fuel 0|1> <memory reservation>`, module on stdin.
fn compile_check(args: &[String]) -> Result<(), (i32, String)> {
    let number = |i: usize| -> Result<u64, (i32, String)> {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| (64, format!("compile check: argument {i} missing or not a number")))
    };
    let (cpu, address_space, fuel, reservation) = (number(0)?, number(1)?, number(2)? == 1, number(3)?);
    let limit = |current: u64, maximum: u64| Rlimit {
        current: Some(current),
        maximum: Some(maximum),
    };
    // Soft limit: SIGXCPU; a second later the kernel's SIGKILL.
    let limits = [
        (Resource::Cpu, limit(cpu, cpu + 1)),
        (Resource::As, limit(address_space, address_space)),
        (Resource::Core, limit(0, 0)),
    ];
    for (resource, value) in limits {
        setrlimit(resource, value).map_err(|e| (70, format!("compile check: setrlimit {resource:?}: {e}")))?;
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
        .map_err(|e| (70, format!("compile check: reading the module: {e}")))?;
    let mut config = Config::new();
    CodegenFlags {
        fuel,
        memory_reservation: reservation,
    }
    .apply(&mut config);
    config.parallel_compilation(false);
    let engine = Engine::new(&config).map_err(|e| (70, format!("compile check: engine: {e:#}")))?;
    Module::from_binary(&engine, &bytes).map_err(|e| (2, format!("{e:#}")))?;
    Ok(())
}
