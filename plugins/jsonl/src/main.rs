//! JSON-lines loader (a Singer target). Appends each stream's records to
//! `<directory>/<stream>.jsonl` (or all RECORD messages to `<directory>/records.jsonl`),
//! and flushes and fsyncs before a STATE is echoed, so an echoed STATE means every
//! record before it is on disk.
//!
//! # Layout
//!
//! - `sink` — the config and [`sink::Sink`], the loader's event handler.

mod sink;

use std::process::ExitCode;

use flexcore_plugin_sdk::{run_loader, LoaderEvent};

fn main() -> ExitCode {
    run_loader(|args| {
        let mut sink = sink::Sink::new(args.config()?)?;
        Ok(move |event: LoaderEvent<'_>| sink.handle(event))
    })
}
