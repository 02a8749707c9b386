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

use flexcore_plugin_sdk::{run_raw_loader, RawLoaderEvent};

fn main() -> ExitCode {
    // Records arrive as JSON text and are written as they came: no tree per record.
    run_raw_loader(|args| {
        let mut sink = sink::Sink::new(args.config()?)?;
        Ok(move |event: RawLoaderEvent<'_>| sink.handle(event))
    })
}
