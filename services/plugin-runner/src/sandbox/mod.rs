//! The wasmtime side of the runner: one [`Sandbox`] per process owns the [`Engine`] (async,
//! epoch interruption, optional fuel, pooling allocator), the thread that ticks the epoch,
//! the runner's default limits, the [`ModuleCache`] and the runner's private [`WorkDir`].
//!
//! Why epochs and not only timers: a guest spinning in a loop never returns to the tokio
//! scheduler, so no timer could preempt it. Every store gets an epoch deadline of one tick
//! and a callback that either traps (deadline passed, execution aborted) or yields to the
//! executor and re-arms for one more tick. That bounds both the wall-clock limit and the
//! reaction to a cancel to about one tick, and keeps tokio worker threads responsive.

mod cache;
mod compile;
mod deny;
mod process;
mod state;
mod workdir;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use cache::{digest_of, CacheLimits, CompiledModule, ModuleCache};
pub use compile::{run_compile_check_if_asked, CompileLimits, COMPILE_CHECK_ARG};
pub use process::ProcessWrap;
pub(crate) use state::{StageState, MAX_TABLE_ELEMENTS};
pub use workdir::{default_parent as default_work_dir, WorkDir};

/// Limits a stage gets when its [`ResourceLimits`](flexcore_contracts::model::ResourceLimits)
/// leave them unset, plus the knobs of the host-side plumbing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// Linear memory cap of one stage, in bytes (256 MiB).
    pub memory_bytes: u64,
    /// Wall-clock limit of one stage (3600 s).
    pub timeout: Duration,
    /// Bytes a stage may write to stdout (1 GiB).
    pub max_stdout_bytes: u64,
    /// Bytes a stage may write to stderr (16 MiB).
    pub max_stderr_bytes: u64,
    /// Capacity of each in-memory pipe between stages, in bytes (64 KiB).
    pub pipe_capacity: usize,
    /// Longest log line forwarded; longer lines are cut (4 KiB).
    pub max_log_line_bytes: usize,
    /// Log lines forwarded per stage and second; the rest are dropped and summarised by a
    /// single "log truncated" line (200).
    pub log_lines_per_second: u32,
    /// Longest Singer message line the host accepts on the hops it observes (64 MiB).
    pub max_message_bytes: usize,
    /// Largest STATE message the host accepts on the hops it observes (1 MiB less 8 KiB,
    /// what a checkpoint command can carry with NATS's default `max_payload`).
    pub max_state_bytes: usize,
    /// Most checkpoints reported per this interval (1 s): STATEs echoed in between are
    /// coalesced into the latest, and a STATE equal to the last reported one is skipped.
    pub checkpoint_interval: Duration,
    /// Sum of the memory limits of one execution's stages (2 GiB).
    pub max_run_memory_bytes: u64,
    /// Most stages in one execution (32).
    pub max_stages: usize,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            memory_bytes: 256 << 20,
            timeout: Duration::from_secs(3600),
            max_stdout_bytes: 1 << 30,
            max_stderr_bytes: 16 << 20,
            pipe_capacity: 64 << 10,
            max_log_line_bytes: 4 << 10,
            log_lines_per_second: 200,
            max_message_bytes: 64 << 20,
            max_state_bytes: (1 << 20) - (8 << 10),
            checkpoint_interval: Duration::from_secs(1),
            max_run_memory_bytes: 2 << 30,
            max_stages: 32,
        }
    }
}

/// How the [`Sandbox`] sets up wasmtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Use the pooling allocator. When the host refuses its up-front address-space
    /// reservation the sandbox falls back to on-demand allocation with a warning.
    pub pooling: bool,
    /// Most wasm instances alive at once (one per running wasm stage): the pool's size.
    pub max_instances: u32,
    /// Largest linear memory any instance may ever reach. Stage limits above it are
    /// clamped to it. (Each memory's virtual address-space reservation is 4 GiB, or this
    /// if larger, so that compiled code needs no bounds checks.)
    pub max_memory_bytes: u64,
    /// Meter fuel. Needed for stages with a fuel limit; costs some throughput for all.
    pub fuel_metering: bool,
    /// Interval of the epoch ticker; the granularity of timeouts and aborts.
    pub epoch_tick: Duration,
    /// Limits for stages that do not set them.
    pub defaults: Defaults,
    /// Where the runner's private work directory is made (`runner.work_dir`); `None` is
    /// [`default_work_dir`].
    pub work_dir: Option<PathBuf>,
    /// Module size, compile time, memory and concurrency.
    pub compile: CompileLimits,
    /// How many compiled modules are kept.
    pub cache: CacheLimits,
    /// How `process` stages are contained.
    pub process: ProcessIsolation,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            pooling: true,
            // 100 concurrent runs of up to five stages, with headroom.
            max_instances: 512,
            max_memory_bytes: 1 << 30,
            fuel_metering: false,
            epoch_tick: Duration::from_millis(10),
            defaults: Defaults::default(),
            work_dir: None,
            compile: CompileLimits::default(),
            cache: CacheLimits::default(),
            process: ProcessIsolation::default(),
        }
    }
}

/// Containment of `process` stages beyond their process group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIsolation {
    /// Run each process stage as pid 1 of its own PID namespace (util-linux `unshare`),
    /// so every descendant (even one that called `setsid`) dies with the stage. Used when
    /// the host allows it; otherwise only the process group is killed (logged once).
    pub pid_namespace: bool,
    /// When the runner runs as root: the uid and gid process stages run as (65534, nobody).
    pub run_as: Option<(u32, u32)>,
    /// Open files per process stage (RLIMIT_NOFILE, 1024).
    pub max_open_files: u64,
    /// Processes of the stage's user (RLIMIT_NPROC, 256): a fork bomb hits it. Not
    /// applied when stages run as the runner's own user, whose processes it would count.
    pub max_processes: u64,
}

impl Default for ProcessIsolation {
    fn default() -> Self {
        Self {
            pid_namespace: true,
            run_as: Some((65_534, 65_534)),
            max_open_files: 1024,
            max_processes: 256,
        }
    }
}

/// Why the sandbox could not be built or could not provide a module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// The module's bytes do not hash to the digest they were requested under.
    #[error("module digest mismatch: expected {expected}, the bytes hash to {actual}")]
    DigestMismatch {
        /// The digest the caller asked for.
        expected: String,
        /// The digest of the bytes supplied.
        actual: String,
    },
    /// The bytes are not a valid WebAssembly module.
    #[error("module {digest} does not compile: {message}")]
    Compile {
        /// The module's digest.
        digest: String,
        /// Why.
        message: String,
    },
    /// The module imports something WASI preview 1 does not provide.
    #[error("module {digest} cannot be linked against WASI preview 1: {message}")]
    Link {
        /// The module's digest.
        digest: String,
        /// Why.
        message: String,
    },
    /// The engine could not be created.
    #[error("cannot create the wasmtime engine: {0}")]
    Engine(String),
    /// The module is larger than the runner accepts.
    #[error("module {digest} is {bytes} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The module's digest.
        digest: String,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// Compiling the module went past the compile limits (time or memory).
    #[error("module {digest} {message}")]
    CompileLimit {
        /// The module's digest.
        digest: String,
        /// Which limit.
        message: String,
    },
    /// The compile check ran out of wall-clock time (its CPU limit was not reached: the
    /// host is busy). Not remembered; a later attempt may compile it.
    #[error("module {digest} {message}")]
    CompileWallClock {
        /// The module's digest.
        digest: String,
        /// What happened.
        message: String,
    },
    /// A compilation task died.
    #[error("module compilation task failed: {0}")]
    Internal(String),
    /// The private work directory could not be made.
    #[error("cannot set up the runner's work directory: {0}")]
    WorkDir(String),
}

/// The per-process wasmtime sandbox shared by all executions.
pub struct Sandbox {
    engine: Engine,
    config: SandboxConfig,
    pooling: bool,
    modules: ModuleCache,
    process: ProcessWrap,
    ticker: Ticker,
    work_dir: WorkDir,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("config", &self.config)
            .field("pooling", &self.pooling)
            .field("modules", &self.modules.len())
            .field("work_dir", &self.work_dir.path())
            .finish()
    }
}

/// Address space reserved for a 32-bit linear memory so that, with the guard region
/// after it, no address a guest can form leaves the reservation: Cranelift then emits no
/// bounds check (and no Spectre guard) on any load or store (wasmtime's own default on
/// 64-bit hosts). The pool reserves it per instance; it is virtual only.
const FULL_RESERVATION: u64 = 4 << 30;

/// The reservation of each linear memory: [`FULL_RESERVATION`], or more if memories may
/// grow larger. How large a memory may really grow stays `max_memory_bytes` (the pool's
/// `max_memory_size` and every store's limiter).
fn memory_reservation(max_memory_bytes: u64) -> u64 {
    max_memory_bytes.max(FULL_RESERVATION)
}

impl Sandbox {
    /// Makes the private work directory (removing those of runners that are gone), builds
    /// the engine and starts the epoch ticker thread.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let parent = config.work_dir.clone().unwrap_or_else(default_work_dir);
        let work_dir =
            WorkDir::create(&parent).map_err(|e| SandboxError::WorkDir(format!("{}: {e}", parent.display())))?;
        let mut wasm = Config::new();
        compile::CodegenFlags {
            fuel: config.fuel_metering,
            memory_reservation: memory_reservation(config.max_memory_bytes),
        }
        .apply(&mut wasm);
        let (engine, pooling) = if config.pooling {
            let mut pool = PoolingAllocationConfig::new();
            let n = config.max_instances;
            pool.total_core_instances(n)
                .total_memories(n)
                .total_tables(n)
                .total_stacks(n)
                .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX));
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
            match Engine::new(&wasm) {
                Ok(engine) => (engine, true),
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        instances = n,
                        "the pooling allocator cannot be set up on this host; using on-demand allocation"
                    );
                    wasm.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                    (
                        Engine::new(&wasm).map_err(|e| SandboxError::Engine(e.to_string()))?,
                        false,
                    )
                }
            }
        } else {
            (
                Engine::new(&wasm).map_err(|e| SandboxError::Engine(e.to_string()))?,
                false,
            )
        };
        let flags = compile::CodegenFlags {
            fuel: config.fuel_metering,
            memory_reservation: memory_reservation(config.max_memory_bytes),
        };
        let modules = ModuleCache::new(&engine, config.compile.clone(), config.cache, flags)?;
        let ticker = Ticker::start(&engine, config.epoch_tick)?;
        let process = ProcessWrap::probe(&config.process);
        Ok(Self {
            engine,
            config,
            pooling,
            modules,
            process,
            ticker,
            work_dir,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The runner's default limits.
    pub fn defaults(&self) -> &Defaults {
        &self.config.defaults
    }

    /// Whether the pooling allocator is in use (false after a fallback).
    pub fn uses_pooling(&self) -> bool {
        self.pooling
    }

    /// The compiled-module cache.
    pub fn modules(&self) -> &ModuleCache {
        &self.modules
    }

    /// The runner's private work directory.
    pub fn work_dir(&self) -> &WorkDir {
        &self.work_dir
    }

    /// How `process` stages are contained on this host.
    pub fn process_wrap(&self) -> &ProcessWrap {
        &self.process
    }

    /// Stops the epoch ticker (also done on drop). Running guests then no longer time out.
    pub fn shutdown(&mut self) {
        self.ticker.stop();
    }
}

/// The thread that advances the engine's epoch. A plain thread, not a tokio task, so a
/// runtime whose workers are all busy in wasm still gets its ticks.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: &Engine, tick: Duration) -> Result<Self, SandboxError> {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| SandboxError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_reserve_enough_address_space_to_need_no_bounds_checks() {
        assert_eq!(memory_reservation(1 << 30), 4 << 30);
        assert_eq!(memory_reservation(8 << 30), 8 << 30);
    }

    #[test]
    fn a_pool_the_host_cannot_reserve_falls_back_to_on_demand() {
        // 2^20 slots of 4 GiB: 4 PiB of address space, more than any host has.
        let config = SandboxConfig {
            max_instances: 1 << 20,
            max_memory_bytes: 4 << 30,
            ..Default::default()
        };
        let sandbox = Sandbox::new(config).unwrap();
        assert!(!sandbox.uses_pooling());
        let small = Sandbox::new(SandboxConfig {
            max_instances: 4,
            ..Default::default()
        })
        .unwrap();
        assert!(small.uses_pooling());
    }
}
