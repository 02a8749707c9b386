//! What each wasm store carries: the WASI context, the memory limiter and the flags the
//! executor reads after a trap to name its cause.

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p1::WasiP1Ctx;

/// The `T` of every `Store<T>` the runner creates.
pub(crate) struct StageState {
    /// WASI preview 1 context: stdio pipes, args, granted env and directories.
    pub(crate) wasi: WasiP1Ctx,
    /// Memory cap, recording whether the guest hit it.
    pub(crate) limiter: MemoryLimiter,
    /// Set by the epoch callback when it stops the guest for its wall-clock limit.
    pub(crate) timed_out: bool,
}

impl StageState {
    pub(crate) fn new(wasi: WasiP1Ctx, memory_bytes: usize) -> Self {
        Self {
            wasi,
            limiter: MemoryLimiter::new(memory_bytes),
            timed_out: false,
        }
    }
}

/// Most elements of a table (a funcref is 8 bytes of host memory): far more than any
/// compiled program's indirect-call table.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// [`StoreLimits`] with a memory cap, plus a record of a refused growth: a guest that
/// traps right after (or because) its memory could not grow failed for `memory`.
pub(crate) struct MemoryLimiter {
    inner: StoreLimits,
    cap: usize,
    pub(crate) exceeded: bool,
}

impl MemoryLimiter {
    fn new(cap: usize) -> Self {
        let inner = StoreLimitsBuilder::new()
            .memory_size(cap)
            // Table elements live in host memory, outside the linear-memory cap: 8 MiB.
            .table_elements(MAX_TABLE_ELEMENTS)
            // A command module is one instance with one memory; anything more is refused.
            .instances(1)
            .memories(1)
            .trap_on_grow_failure(true)
            .build();
        Self {
            inner,
            cap,
            exceeded: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum);
        // Refused by the cap or by the engine's ceiling (`maximum`): a memory failure.
        if desired > self.cap || !matches!(allowed, Ok(true)) {
            self.exceeded = true;
        }
        allowed
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // The engine's own ceiling (pool slot size) refused it: still a memory failure.
        self.exceeded = true;
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.inner.table_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.exceeded = true;
        }
        allowed
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.exceeded = true;
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}
