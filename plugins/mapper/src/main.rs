//! Field-mapping transformer: per stream (or `*` for streams without their own entry)
//! filters, renames, drops, whitelists and sets fields of RECORDs, and rewrites SCHEMA
//! messages to match. STATE and every other message pass through unchanged.
//!
//! # Layout
//!
//! - `rules` — the config and how one stream's rules change a record or a schema.

mod rules;

use std::process::ExitCode;

use flexcore_plugin_sdk::{run_raw_transformer, Output, Parsed};

fn main() -> ExitCode {
    // RECORDs arrive as JSON text and only their top-level fields are taken apart.
    run_raw_transformer(|args| {
        let config: rules::Config = args.config()?;
        Ok(move |parsed: Parsed<'_>, out: &mut Output| match parsed {
            Parsed::Record(record) => config.apply_raw(&record, out),
            Parsed::Message(message) => match config.apply(message) {
                Some(mapped) => out.write(&mapped),
                None => Ok(()),
            },
        })
    })
}
