//! Field-mapping transformer: per stream (or `*` for streams without their own entry)
//! filters, renames, drops, whitelists and sets fields of RECORDs, and rewrites SCHEMA
//! messages to match. STATE and every other message pass through unchanged.
//!
//! # Layout
//!
//! - `rules` — the config and how one stream's rules change a record or a schema.

mod rules;

use std::process::ExitCode;

use flexcore_plugin_sdk::{run_transformer, Message};

fn main() -> ExitCode {
    run_transformer(|args| {
        let config: rules::Config = args.config()?;
        Ok(move |message: Message| Ok(config.apply(message).into_iter().collect()))
    })
}
