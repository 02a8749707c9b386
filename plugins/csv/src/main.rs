//! CSV / JSON-lines extractor (a Singer tap). Reads a file or a directory of files inside
//! a granted directory; one stream per file (or the configured stream), full or
//! incremental on a replication key.
//!
//! # Layout
//!
//! - `source` — the config, which files to read, schemas and rows.
//! - `csv_reader` — a small streaming RFC 4180 reader.
//! - `bookmark` — replication-key comparison and the STATE bookmarks.
//! - `sync` — sync and `--discover`.

mod bookmark;
mod csv_reader;
mod source;
mod sync;

use std::process::ExitCode;

use flexcore_plugin_sdk::run_extractor;

fn main() -> ExitCode {
    run_extractor(|args, out| {
        let config: source::Config = args.config()?;
        if args.discover {
            sync::discover(&config, out)
        } else {
            sync::sync(&config, args.state()?, out)
        }
    })
}
