//! Writing a FlexCore plugin: a Singer tap, transformer or target compiled to
//! `wasm32-wasip1` (or natively). Stdout carries Singer messages, stderr logs; config,
//! state and catalog arrive as files named on the command line.
//!
//! ```no_run
//! use flexcore_plugin_sdk::{run_loader, LoaderAction, LoaderEvent};
//! fn main() -> std::process::ExitCode {
//!     // A loader that persists nothing, so every STATE can be echoed at once.
//!     run_loader(|_args| Ok(|_event: LoaderEvent<'_>| Ok(LoaderAction::Durable)))
//! }
//! ```
//!
//! # Layout
//!
//! - `message` — [`Message`] (SCHEMA, RECORD, STATE, ACTIVATE_VERSION, BATCH, others),
//!   [`Message::parse_line`] / [`Message::to_line`], [`ProtocolError`]. The host runner
//!   uses the same parser to validate plugin output.
//! - `args` — [`Args`]: `--config`, `--state`, `--catalog`/`--properties`, `--discover`.
//! - `io` — [`Output`] (buffered stdout writer) and [`Input`] (stdin message iterator).
//! - `run` — [`run_extractor`], [`run_transformer`], [`run_loader`] (and the testable
//!   loops [`transform`], [`load`] behind them), [`exit_code`].
//! - `raw` — the same with RECORDs left as JSON text ([`parse_raw`], [`RawRecord`],
//!   [`Input::next_raw`], [`Output::write_raw_record`], [`run_raw_loader`],
//!   [`run_raw_transformer`]) for plugins that forward records without a JSON tree each.
//! - `log` — [`log`], [`metric_counter`], [`metric_timer`] on stderr.
//! - `error` — [`PluginError`].
//! - `exit` — [`FailureKind`]: the exit-status convention (BSD sysexits) that tells the
//!   runner whether a retry can help.

mod args;
mod error;
mod exit;
mod io;
mod log;
mod message;
mod raw;
mod run;

pub use args::{Args, ArgsError};
pub use error::PluginError;
pub use exit::FailureKind;
pub use io::{Input, Output, OUTPUT_BUFFER};
pub use log::{log, metric_counter, metric_timer, Level};
pub use message::{Message, ProtocolError};
pub use raw::{
    load_raw, parse_raw, run_raw_loader, run_raw_transformer, transform_raw, write_json_str, write_record, Parsed,
    RawLoaderEvent, RawRecord,
};
pub use run::{exit_code, load, run_extractor, run_loader, run_transformer, transform, LoaderAction, LoaderEvent};
/// Re-exported so plugins build their JSON with the same `serde_json` as the SDK.
pub use serde_json;
