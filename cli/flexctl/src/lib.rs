//! `flexctl`: the FlexCore operator CLI, as a library so tests drive it without a process.
//!
//! # Layout
//! - [`cli`]: the command line (clap derive), its global options, and dispatch.
//! - [`duration`]: the `30s` / `2m` / `500ms` parser used by duration options.
//! - [`error`]: how a failure is printed (`error: …`, or JSON with `--output json`).
//! - [`plugin`]: `flexctl plugin register` (upload + register).
//! - [`schedule`]: `flexctl schedule backfill`.
//! - [`security`]: `flexctl security init|add|remove|accounts`, a deployment's identities.
//! - [`nats`]: the server and login every NATS connection uses, passed down from the
//!   global options.
//! - [`tools`]: `flexctl dev` and `flexctl bench`, handed to the `flexcore-dev` binary
//!   (crate `cli/flexcore-dev`), so flexctl links neither the plugin runtime nor Postgres.
//!
//! The other modules are one command each (`api` is the typed client they share).

pub mod api;
pub mod api_key;
pub mod cli;
pub mod duration;
pub mod error;
pub mod events;
pub mod nats;
pub mod pipeline;
pub use flexcore_pipeline_file::pipeline_file;
pub mod plugin;
pub mod run;
pub mod schedule;
pub mod security;
pub mod status;
pub mod table;
pub mod tools;
pub use flexcore_pipeline_file::yaml;

/// Prints one result line on stdout.
#[allow(clippy::print_stdout)]
pub fn write_stdout(line: &str) -> anyhow::Result<()> {
    println!("{line}");
    Ok(())
}
