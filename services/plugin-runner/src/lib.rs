//! FlexCore plugin runner: executes Singer pipelines whose stages are WASI command
//! modules (sandboxed by wasmtime) or, opt-in, native executables.
//!
//! # Layout
//! - [`sandbox`]: one wasmtime [`Engine`](wasmtime::Engine) per process (async, epoch
//!   interruption ticked every 10 ms, optional fuel, pooling allocator with an on-demand
//!   fallback), the runner's default limits ([`sandbox::Defaults`]) and the
//!   [`sandbox::ModuleCache`] that verifies a module's sha256 digest, compiles it once and
//!   keeps an `InstancePre` linked with WASI preview 1.
//!   - `sandbox/cache.rs`: the module cache; `sandbox/state.rs`: per-store state and the
//!     memory limiter; `sandbox/workdir.rs`: the runner's private work directory (0700,
//!     locked while the runner lives, left-overs of dead runners removed on start).
//! - [`executor`]: runs one pipeline execution in-process ([`executor::execute`]).
//!   - `executor/stage.rs`: [`executor::Stage`] / [`executor::Program`], limits resolved
//!     against the defaults, env grants, private config/state files, shape check.
//!   - `executor/redact.rs`: [`executor::Redactor`]: every encoding of the resolved secrets
//!     scrubbed from logs, checkpoints, counters and failure messages.
//!   - `executor/pipe/`: bounded in-memory byte pipes and their WASI stdio views.
//!   - `executor/wasm.rs` / `executor/process.rs`: one stage in wasmtime / as a child
//!     process group.
//!   - `executor/observe.rs`: the host's view of the stream: validation and counts on the
//!     hop into the loader, checkpoints from the loader's STATE echoes.
//!   - `executor/logs.rs`, `executor/lines.rs`: stderr to bounded log events; line
//!     splitting without per-line allocation.
//!   - `executor/failure.rs`: [`executor::ExecFailure`], its codes, first-failure-wins.
//! - [`worker`]: the NATS service layer that claims runs and drives the executor; it
//!   resolves `${secret:…}` references and checks env grants against the operator's
//!   allow-list.

pub mod executor;
pub mod sandbox;
pub mod worker;

/// This service and its version, as its replies and announcements name it
/// (`Flexcore-Service`).
pub const SERVICE: &str = concat!("flexcore-runner/", env!("CARGO_PKG_VERSION"));
