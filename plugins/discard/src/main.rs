//! Loader for benchmarks: counts RECORDs, persists nothing, and so echoes every STATE
//! as soon as it arrives. Logs a `record_count` metric per stream at the end. Records
//! arrive as JSON text ([`run_raw_loader`]): checked, never built into a tree.
//!
//! # Layout
//!
//! Everything lives here: [`Counter`] is the loader's event handler.

use std::collections::BTreeMap;
use std::process::ExitCode;

use flexcore_plugin_sdk::{log, metric_counter, run_raw_loader, Level, LoaderAction, PluginError, RawLoaderEvent};

fn main() -> ExitCode {
    run_raw_loader(|_args| {
        let mut counter = Counter::default();
        Ok(move |event: RawLoaderEvent<'_>| counter.handle(event))
    })
}

/// Records seen per stream.
#[derive(Debug, Default)]
struct Counter {
    records: BTreeMap<String, u64>,
}

impl Counter {
    fn handle(&mut self, event: RawLoaderEvent<'_>) -> Result<LoaderAction, PluginError> {
        match event {
            RawLoaderEvent::Record(record) => match self.records.get_mut(&*record.stream) {
                Some(n) => *n += 1,
                None => {
                    self.records.insert(record.stream.into_owned(), 1);
                }
            },
            RawLoaderEvent::End => {
                let total: u64 = self.records.values().sum();
                for (stream, n) in &self.records {
                    metric_counter("record_count", *n, &[("stream", stream)]);
                }
                log(Level::Info, format_args!("discarded {total} records"));
            }
            RawLoaderEvent::Message(_) | RawLoaderEvent::State(_) => {}
        }
        // Nothing is ever persisted, so everything received is as durable as it gets.
        Ok(LoaderAction::Durable)
    }
}
