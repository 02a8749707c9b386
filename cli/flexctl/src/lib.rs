//! `flexctl`: the FlexCore operator CLI, as a library so tests drive it without a process.
//!
//! # Layout
//! - [`cli`]: the command line (clap derive), its global options, and dispatch.
//! - [`duration`]: the `30s` / `2m` / `500ms` parser used by duration options.
//! - [`error`]: how a failure is printed (`error: …`, or JSON with `--output json`).
//! - [`api`]: the typed client, and [`api::Api::resolve`], where every id, id prefix or
//!   name given on the command line becomes an id.
//! - [`complete`]: `flexctl __complete`, names and ids for the shell completion scripts.
//! - [`follow`]: following a stream (`events tail|list`, `run logs --follow`): the watch on
//!   the NATS connection and consumers made again after the server forgot them.
//! - [`plugin`]: `flexctl plugin register` (upload + register).
//! - [`projection`]: `flexctl projection list|rebuild`.
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
pub mod apply;
pub mod cli;
pub mod complete;
pub mod duration;
pub mod error;
pub mod events;
pub mod follow;
pub mod nats;
pub mod pipeline;
pub use flexcore_pipeline_file::pipeline_file;
pub mod plugin;
pub mod projection;
pub mod run;
pub mod schedule;
pub mod security;
pub mod status;
pub mod table;
pub mod tools;
pub use flexcore_pipeline_file::yaml;

/// Prints one result line on stdout (a newline is added).
///
/// Every result flexctl prints goes through here or [`write_stdout_raw`], never
/// `println!`, which panics when stdout is gone: a reader that stops early
/// (`flexctl events tail | head`) makes this return the `BrokenPipe` error, which
/// [`cli::main_with`] turns into a quiet exit (see [`is_broken_pipe`]).
pub fn write_stdout(line: &str) -> anyhow::Result<()> {
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    write_stdout_raw(text.as_bytes())
}

/// Writes `bytes` to stdout as they are and flushes them (so a follower's lines are
/// seen at once, and a closed pipe is noticed at the write that hits it).
pub fn write_stdout_raw(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()?;
    Ok(())
}

/// Whether `error` comes from writing to a closed pipe (`EPIPE`): the reader of flexctl's
/// output went away (`| head`), which is no failure of the command.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_is_recognised_anywhere_in_the_chain() {
        let pipe = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&pipe));
        assert!(is_broken_pipe(&pipe.context("printing an event")));
        let other = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(!is_broken_pipe(&other));
        assert!(!is_broken_pipe(&anyhow::anyhow!("broken pipe, but only in words")));
    }
}
