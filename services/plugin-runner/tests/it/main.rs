//! Integration tests of the sandbox and executor with real wasmtime, running the example
//! plugins from `plugins/` (built for wasm32-wasip1 on first use) and a few WAT modules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod exits;
mod helpers;
// The hostile suite's modules: a few serve the limits and isolation tests too.
#[allow(dead_code)]
#[path = "../hostile/modules.rs"]
mod hostile_modules;
mod isolation;
mod limits;
mod pipeline;
mod process;
mod protocol;
