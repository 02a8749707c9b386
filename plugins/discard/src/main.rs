//! Loader for benchmarks: counts RECORDs, persists nothing, and so echoes every STATE
//! as soon as it arrives. Logs a `record_count` metric per stream at the end.
//!
//! # Layout
//!
//! Everything lives here: [`Counter`] is the loader's event handler.

use std::collections::BTreeMap;
use std::process::ExitCode;

use flexcore_plugin_sdk::{log, metric_counter, run_loader, Level, LoaderAction, LoaderEvent, Message, PluginError};

fn main() -> ExitCode {
    run_loader(|_args| {
        let mut counter = Counter::default();
        Ok(move |event: LoaderEvent<'_>| counter.handle(event))
    })
}

/// Records seen per stream.
#[derive(Debug, Default)]
struct Counter {
    records: BTreeMap<String, u64>,
}

impl Counter {
    fn handle(&mut self, event: LoaderEvent<'_>) -> Result<LoaderAction, PluginError> {
        match event {
            LoaderEvent::Message(Message::Record { stream, .. }) => match self.records.get_mut(&stream) {
                Some(n) => *n += 1,
                None => {
                    self.records.insert(stream, 1);
                }
            },
            LoaderEvent::End => {
                let total: u64 = self.records.values().sum();
                for (stream, n) in &self.records {
                    metric_counter("record_count", *n, &[("stream", stream)]);
                }
                log(Level::Info, format_args!("discarded {total} records"));
            }
            LoaderEvent::Message(_) | LoaderEvent::State(_) => {}
        }
        // Nothing is ever persisted, so everything received is as durable as it gets.
        Ok(LoaderAction::Durable)
    }
}
