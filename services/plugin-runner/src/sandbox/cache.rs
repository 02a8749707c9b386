//! Compiled modules by content digest: verify, bound, compile once, keep an `InstancePre`,
//! evict the least recently used beyond a count and a size.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OnceCell, Semaphore};
use wasmtime::{Engine, InstancePre, Linker, Module};

use super::compile::{self, CodegenFlags, CompileLimits};
use super::{SandboxError, StageState};

/// `sha256:<hex>` of `bytes`, the form plugin digests take (computed by the plugin store,
/// which stores modules under the same digest).
pub fn digest_of(bytes: &[u8]) -> String {
    flexcore_plugin_store::digest_of(bytes).into()
}

/// A module compiled and pre-linked with WASI preview 1, ready to instantiate.
/// Cheap to clone; a clone keeps the code alive after the cache evicted it.
#[derive(Clone)]
pub struct CompiledModule {
    digest: Arc<str>,
    pre: InstancePre<StageState>,
    /// Bytes of compiled code and data the module keeps in memory.
    size: u64,
}

impl CompiledModule {
    /// The digest it was verified against.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Bytes of compiled code and data it keeps in memory.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn pre(&self) -> &InstancePre<StageState> {
        &self.pre
    }
}

impl std::fmt::Debug for CompiledModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModule")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .finish()
    }
}

/// How many compiled modules the cache keeps, and how much of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Most modules kept (64).
    pub max_modules: usize,
    /// Most bytes of compiled code kept (1 GiB). A module larger than this on its own is
    /// still kept while it is the only one.
    pub max_bytes: u64,
    /// Most digests remembered as refused by the compile check (1024).
    pub max_refused: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            max_modules: 64,
            max_bytes: 1 << 30,
            max_refused: 1024,
        }
    }
}

struct Slot {
    cell: Arc<OnceCell<CompiledModule>>,
    last_used: u64,
}

#[derive(Default)]
struct Slots {
    map: HashMap<String, Slot>,
    clock: u64,
    /// Digests the compile check refused, with why (deterministic: never tried again).
    refused: HashMap<String, SandboxError>,
}

impl Slots {
    fn touch(&mut self, digest: &str) -> Option<&Slot> {
        self.clock += 1;
        let now = self.clock;
        let slot = self.map.get_mut(digest)?;
        slot.last_used = now;
        Some(slot)
    }
}

/// Compiled modules keyed by digest. Concurrent requests for one digest compile it once;
/// a failed compilation leaves no entry, so a later request tries again (except a module
/// refused by the compile check, which is remembered).
pub struct ModuleCache {
    engine: Engine,
    linker: Arc<Linker<StageState>>,
    slots: Mutex<Slots>,
    limits: CompileLimits,
    cache: CacheLimits,
    flags: CodegenFlags,
    compiling: Arc<Semaphore>,
}

impl ModuleCache {
    pub(crate) fn new(
        engine: &Engine,
        limits: CompileLimits,
        cache: CacheLimits,
        flags: CodegenFlags,
    ) -> Result<Self, SandboxError> {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |state: &mut StageState| &mut state.wasi)
            .map_err(|e| SandboxError::Engine(format!("cannot link WASI preview 1: {e}")))?;
        super::deny::shadow_symlinks(&mut linker)?;
        let compiling = Arc::new(Semaphore::new(limits.concurrency.max(1)));
        Ok(Self {
            engine: engine.clone(),
            linker: Arc::new(linker),
            slots: Mutex::new(Slots::default()),
            limits,
            cache,
            flags,
            compiling,
        })
    }

    /// The module for `digest`: from the cache, or verified against `bytes` (size and
    /// digest before any compilation), checked and compiled within the compile limits
    /// off the async runtime, and cached. When the digest is cached `bytes` are not looked
    /// at, so what runs is always the module the digest names.
    pub async fn get_or_compile(&self, digest: &str, bytes: Arc<[u8]>) -> Result<CompiledModule, SandboxError> {
        let cell = {
            let mut slots = self.slots.lock();
            if let Some(refused) = slots.refused.get(digest) {
                return Err(refused.clone());
            }
            match slots.touch(digest) {
                Some(slot) => Arc::clone(&slot.cell),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    let last_used = slots.clock;
                    slots.map.insert(
                        digest.to_owned(),
                        Slot {
                            cell: Arc::clone(&cell),
                            last_used,
                        },
                    );
                    cell
                }
            }
        };
        let result = cell
            .get_or_try_init(|| self.compile(digest.to_owned(), bytes))
            .await
            .cloned();
        match &result {
            Ok(_) => self.evict(digest),
            Err(err) => self.forget_failed(digest, err),
        }
        result
    }

    /// The cached module for `digest`, if any.
    pub fn get(&self, digest: &str) -> Option<CompiledModule> {
        self.slots
            .lock()
            .touch(digest)
            .and_then(|slot| slot.cell.get().cloned())
    }

    /// Forgets `digest`; running executions keep their copy.
    pub fn remove(&self, digest: &str) -> bool {
        self.slots.lock().map.remove(digest).is_some()
    }

    /// Number of digests cached (or being compiled).
    pub fn len(&self) -> usize {
        self.slots.lock().map.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of compiled code cached.
    pub fn cached_bytes(&self) -> u64 {
        self.slots
            .lock()
            .map
            .values()
            .filter_map(|s| s.cell.get().map(CompiledModule::size))
            .sum()
    }

    /// The limits modules are compiled under.
    pub fn limits(&self) -> &CompileLimits {
        &self.limits
    }

    async fn compile(&self, digest: String, bytes: Arc<[u8]>) -> Result<CompiledModule, SandboxError> {
        let len = bytes.len() as u64;
        if len > self.limits.max_module_bytes {
            return Err(SandboxError::TooLarge {
                digest,
                bytes: len,
                limit: self.limits.max_module_bytes,
            });
        }
        let actual = digest_of(&bytes);
        if actual != digest {
            return Err(SandboxError::DigestMismatch {
                expected: digest,
                actual,
            });
        }
        // Waiting for a turn is cancellable (the caller drops this future); the check
        // is killed with it.
        let turn = Arc::clone(&self.compiling)
            .acquire_owned()
            .await
            .map_err(|e| SandboxError::Internal(e.to_string()))?;
        if let Some(checker) = &self.limits.checker {
            compile::check(&self.limits, checker, self.flags, &digest, &bytes).await?;
        }
        let engine = self.engine.clone();
        let linker = Arc::clone(&self.linker);
        // The turn is held until the compilation ends, even if the caller stops waiting.
        let task = tokio::task::spawn_blocking(move || {
            let _held = turn;
            let module = Module::from_binary(&engine, &bytes).map_err(|e| SandboxError::Compile {
                digest: digest.clone(),
                message: format!("{e:#}"),
            })?;
            let pre = linker.instantiate_pre(&module).map_err(|e| SandboxError::Link {
                digest: digest.clone(),
                message: format!("{e:#}"),
            })?;
            let image = module.image_range();
            let size = (image.end as usize).saturating_sub(image.start as usize) as u64;
            tracing::debug!(%digest, size, "module compiled");
            Ok(CompiledModule {
                digest: digest.into(),
                pre,
                size,
            })
        });
        task.await
            .map_err(|e| SandboxError::Internal(e.to_string()))
            .and_then(|r| r)
    }

    /// Keeps failures out of the map so it cannot fill up with garbage digests; remembers
    /// a refusal by the compile check, which would only burn the same CPU again.
    fn forget_failed(&self, digest: &str, err: &SandboxError) {
        let mut slots = self.slots.lock();
        if slots.map.get(digest).is_some_and(|slot| !slot.cell.initialized()) {
            slots.map.remove(digest);
        }
        // Only after the digest was verified: bytes that merely claim a digest cannot get
        // the real module refused. (A size refusal costs nothing to repeat.)
        if matches!(err, SandboxError::CompileLimit { .. }) {
            if slots.refused.len() >= self.cache.max_refused {
                slots.refused.clear();
            }
            slots.refused.insert(digest.to_owned(), err.clone());
        }
    }

    /// Drops the least recently used compiled modules (never `keep`) until the cache is
    /// within its count and size.
    fn evict(&self, keep: &str) {
        let mut slots = self.slots.lock();
        loop {
            let compiled = slots.map.values().filter(|s| s.cell.initialized());
            let (count, bytes) = compiled.fold((0usize, 0u64), |(n, b), s| {
                (n + 1, b + s.cell.get().map_or(0, CompiledModule::size))
            });
            if count <= self.cache.max_modules && bytes <= self.cache.max_bytes {
                return;
            }
            let oldest = slots
                .map
                .iter()
                .filter(|(d, s)| d.as_str() != keep && s.cell.initialized())
                .min_by_key(|(_, s)| s.last_used)
                .map(|(d, _)| d.clone());
            match oldest {
                Some(digest) => {
                    tracing::debug!(%digest, "compiled module evicted");
                    slots.map.remove(&digest);
                }
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::sandbox::{Sandbox, SandboxConfig};

    /// A command module with a 17-page memory and a data segment, like a small plugin.
    const MODULE: &str = r#"(module
        (memory (export "memory") 17)
        (data (i32.const 1024) "hello")
        (func (export "_start")))"#;

    async fn instantiate_once(sandbox: &Sandbox, module: &CompiledModule) -> Duration {
        let started = Instant::now();
        let wasi = wasmtime_wasi::WasiCtxBuilder::new().build_p1();
        let mut store = wasmtime::Store::new(sandbox.engine(), StageState::new(wasi, 64 << 20));
        store.limiter(|s| &mut s.limiter);
        module.pre().instantiate_async(&mut store).await.unwrap();
        started.elapsed()
    }

    async fn percentiles(sandbox: &Sandbox, module: &CompiledModule) -> (Duration, Duration) {
        let mut took = Vec::new();
        for _ in 0..2000 {
            took.push(instantiate_once(sandbox, module).await);
        }
        took.sort();
        (took[1000], took[1980])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn digests_are_checked_before_compiling_and_modules_compile_once() {
        let sandbox = Sandbox::new(SandboxConfig {
            max_instances: 4,
            ..Default::default()
        })
        .unwrap();
        let bytes: Arc<[u8]> = wat::parse_str(MODULE).unwrap().into();
        let digest = digest_of(&bytes);
        let wrong = format!("sha256:{}", "0".repeat(64));
        let err = sandbox
            .modules()
            .get_or_compile(&wrong, Arc::clone(&bytes))
            .await
            .unwrap_err();
        assert!(matches!(err, SandboxError::DigestMismatch { .. }), "{err}");
        assert!(sandbox.modules().is_empty(), "failures are not cached");
        let garbage: Arc<[u8]> = Arc::from(&b"\0asm garbage"[..]);
        let err = sandbox
            .modules()
            .get_or_compile(&digest_of(&garbage), garbage)
            .await
            .unwrap_err();
        assert!(matches!(err, SandboxError::Compile { .. }), "{err}");

        let (a, b) = tokio::join!(
            sandbox.modules().get_or_compile(&digest, Arc::clone(&bytes)),
            sandbox.modules().get_or_compile(&digest, Arc::clone(&bytes))
        );
        assert_eq!(a.unwrap().digest(), digest);
        assert_eq!(b.unwrap().digest(), digest);
        assert_eq!(sandbox.modules().len(), 1);
        // Cached: the bytes are not even looked at.
        let cached = sandbox
            .modules()
            .get_or_compile(&digest, Arc::from(&b""[..]))
            .await
            .unwrap();
        assert_eq!(cached.digest(), digest);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_least_recently_used_modules_are_evicted_and_oversized_ones_refused() {
        let sandbox = Sandbox::new(SandboxConfig {
            max_instances: 4,
            compile: CompileLimits {
                max_module_bytes: 4096,
                ..Default::default()
            },
            cache: CacheLimits {
                max_modules: 2,
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        let module = |n: u32| -> (String, Arc<[u8]>) {
            let bytes: Arc<[u8]> =
                wat::parse_str(format!(r#"(module (func (export "_start") (drop (i32.const {n}))))"#))
                    .unwrap()
                    .into();
            (digest_of(&bytes), bytes)
        };
        let cache = sandbox.modules();
        let (a, b, c) = (module(1), module(2), module(3));
        for (digest, bytes) in [&a, &b] {
            cache.get_or_compile(digest, Arc::clone(bytes)).await.unwrap();
        }
        assert!(cache.get(&a.0).is_some(), "a is now more recently used than b");
        let held = cache.get_or_compile(&c.0, Arc::clone(&c.1)).await.unwrap();
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&b.0).is_none(), "b was the least recently used");
        assert!(cache.get(&a.0).is_some() && cache.get(&c.0).is_some());
        assert!(cache.cached_bytes() > 0);
        // An evicted module a run still holds stays usable.
        cache.remove(&c.0);
        instantiate_once(&sandbox, &held).await;

        let big: Arc<[u8]> = vec![0u8; 4097].into();
        let err = cache.get_or_compile(&digest_of(&big), big).await.unwrap_err();
        assert!(
            matches!(
                err,
                SandboxError::TooLarge {
                    bytes: 4097,
                    limit: 4096,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "benchmark: cargo test --release -p flexcore-runner --lib -- --ignored --nocapture instantiation"]
    #[allow(clippy::print_stdout)]
    async fn instantiation_latency() {
        let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
        println!("pooling allocator: {}", sandbox.uses_pooling());
        let bytes: Arc<[u8]> = wat::parse_str(MODULE).unwrap().into();
        let module = sandbox
            .modules()
            .get_or_compile(&digest_of(&bytes), bytes)
            .await
            .unwrap();
        let (p50, p99) = percentiles(&sandbox, &module).await;
        println!("instantiate (store + WASI ctx + InstancePre): p50 {p50:?}, p99 {p99:?}");
        let plugin = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/wasm-tests/wasm32-wasip1/release/flexcore-plugin-discard.wasm");
        if let Ok(bytes) = std::fs::read(plugin) {
            let bytes: Arc<[u8]> = bytes.into();
            let module = sandbox
                .modules()
                .get_or_compile(&digest_of(&bytes), bytes)
                .await
                .unwrap();
            let (p50, p99) = percentiles(&sandbox, &module).await;
            println!("instantiate the discard plugin: p50 {p50:?}, p99 {p99:?}");
            let mut took = Vec::new();
            for _ in 0..200 {
                let wasi = wasmtime_wasi::WasiCtxBuilder::new().build_p1();
                let mut store = wasmtime::Store::new(sandbox.engine(), StageState::new(wasi, 64 << 20));
                store.limiter(|s| &mut s.limiter);
                store.set_epoch_deadline(1_000_000);
                let started = Instant::now();
                let instance = module.pre().instantiate_async(&mut store).await.unwrap();
                let start = instance.get_typed_func::<(), ()>(&mut store, "_start").unwrap();
                let _ = start.call_async(&mut store, ()).await;
                took.push(started.elapsed());
            }
            took.sort();
            println!(
                "instantiate + run the discard plugin on empty input: p50 {:?}, p99 {:?}",
                took[100], took[198]
            );
        }
    }
}
