//! Compiled modules by content digest: verify, compile once, keep an `InstancePre`.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::OnceCell;
use wasmtime::{Engine, InstancePre, Linker, Module};

use super::{SandboxError, StageState};

/// `sha256:<hex>` of `bytes`, the form plugin digests take (computed by the plugin store,
/// which stores modules under the same digest).
pub fn digest_of(bytes: &[u8]) -> String {
    flexcore_plugin_store::digest_of(bytes).into()
}

/// A module compiled and pre-linked with WASI preview 1, ready to instantiate.
/// Cheap to clone.
#[derive(Clone)]
pub struct CompiledModule {
    digest: Arc<str>,
    pre: InstancePre<StageState>,
}

impl CompiledModule {
    /// The digest it was verified against.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub(crate) fn pre(&self) -> &InstancePre<StageState> {
        &self.pre
    }
}

impl std::fmt::Debug for CompiledModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModule").field("digest", &self.digest).finish()
    }
}

type Slot = Arc<OnceCell<CompiledModule>>;

/// Compiled modules keyed by digest. Concurrent requests for one digest compile it once;
/// a failed compilation leaves no entry, so a later request tries again.
///
/// Entries live until [`ModuleCache::remove`]: plugin versions are few and immutable.
pub struct ModuleCache {
    engine: Engine,
    linker: Arc<Linker<StageState>>,
    slots: Mutex<HashMap<String, Slot>>,
}

impl ModuleCache {
    pub(crate) fn new(engine: &Engine) -> Result<Self, SandboxError> {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |state: &mut StageState| &mut state.wasi)
            .map_err(|e| SandboxError::Engine(format!("cannot link WASI preview 1: {e}")))?;
        Ok(Self {
            engine: engine.clone(),
            linker: Arc::new(linker),
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// The module for `digest`: from the cache, or verified against `bytes` (before any
    /// compilation: a mismatch is [`SandboxError::DigestMismatch`]), compiled on a blocking
    /// thread and cached. When the digest is cached `bytes` are not looked at, so what runs
    /// is always the module the digest names.
    pub async fn get_or_compile(&self, digest: &str, bytes: Arc<[u8]>) -> Result<CompiledModule, SandboxError> {
        let slot = Arc::clone(self.slots.lock().entry(digest.to_owned()).or_default());
        slot.get_or_try_init(|| self.compile(digest.to_owned(), bytes))
            .await
            .cloned()
    }

    /// The cached module for `digest`, if any.
    pub fn get(&self, digest: &str) -> Option<CompiledModule> {
        self.slots.lock().get(digest).and_then(|slot| slot.get().cloned())
    }

    /// Forgets `digest`; running executions keep their copy.
    pub fn remove(&self, digest: &str) -> bool {
        self.slots.lock().remove(digest).is_some()
    }

    /// Number of digests cached (or being compiled).
    pub fn len(&self) -> usize {
        self.slots.lock().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn compile(&self, digest: String, bytes: Arc<[u8]>) -> Result<CompiledModule, SandboxError> {
        let key = digest.clone();
        let engine = self.engine.clone();
        let linker = Arc::clone(&self.linker);
        let task = tokio::task::spawn_blocking(move || {
            let actual = digest_of(&bytes);
            if actual != digest {
                return Err(SandboxError::DigestMismatch {
                    expected: digest,
                    actual,
                });
            }
            let module = Module::from_binary(&engine, &bytes).map_err(|e| SandboxError::Compile {
                digest: digest.clone(),
                message: format!("{e:#}"),
            })?;
            let pre = linker.instantiate_pre(&module).map_err(|e| SandboxError::Link {
                digest: digest.clone(),
                message: format!("{e:#}"),
            })?;
            tracing::debug!(%digest, "module compiled");
            Ok(CompiledModule {
                digest: digest.into(),
                pre,
            })
        });
        let result = task
            .await
            .map_err(|e| SandboxError::Internal(e.to_string()))
            .and_then(|r| r);
        if result.is_err() {
            // Keep failures out of the map so it cannot fill up with garbage digests.
            self.forget_if_empty(&key);
        }
        result
    }

    fn forget_if_empty(&self, digest: &str) {
        let mut slots = self.slots.lock();
        if slots.get(digest).is_some_and(|slot| !slot.initialized()) {
            slots.remove(digest);
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
