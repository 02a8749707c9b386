//! A plugin that misbehaves on purpose, one way per `mode`, so the runner's sandbox and
//! stream checks can be tested against real wasm: busy loops, runaway memory, file
//! system escapes, output floods, traps, long sleeps, failures and protocol violations.
//!
//! # Layout
//!
//! Everything lives here: [`Config`] / [`Mode`] and one function per mode.

use std::hint::black_box;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use flexcore_plugin_sdk::serde_json::json;
use flexcore_plugin_sdk::{exit_code, log, Args, Level, Message, Output, PluginError};
use serde::Deserialize;

/// The plugin's config (see `config.schema.json`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// How to misbehave.
    mode: Mode,
    /// `escape`: the file to try to open.
    #[serde(default)]
    path: Option<PathBuf>,
    /// `flood`: stop after this many bytes of output; `alloc`: stop (exit 0) after
    /// allocating this many bytes. Unbounded when absent.
    #[serde(default)]
    bytes: Option<u64>,
    /// `sleep`: how long (default one hour).
    #[serde(default)]
    seconds: Option<u64>,
}

/// The available misbehaviours.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    /// Spin forever without any host call.
    Loop,
    /// Allocate and touch 1 MiB chunks forever (or up to `bytes`).
    Alloc,
    /// Open `path`; print `ESCAPED` if that worked, else exit 3.
    Escape,
    /// A SCHEMA, then valid RECORDs forever (or up to `bytes`).
    Flood,
    /// Abort (a wasm `unreachable` trap).
    Trap,
    /// Sleep for `seconds`.
    Sleep,
    /// Log an error and exit 2.
    ExitError,
    /// Write a line that is not JSON.
    BadJson,
    /// A RECORD for a stream that never had a SCHEMA, then a STATE.
    UndeclaredStream,
    /// As a loader: echo a STATE before reading any input, then drain stdin.
    EarlyState,
}

fn main() -> ExitCode {
    let result = Args::from_env()
        .map_err(PluginError::from)
        .and_then(|args| args.config::<Config>());
    match result.and_then(|config| misbehave(&config)) {
        Ok(code) => code,
        Err(e) => exit_code(Err(e)),
    }
}

fn misbehave(config: &Config) -> Result<ExitCode, PluginError> {
    let mut out = Output::stdout();
    match config.mode {
        Mode::Loop => spin(),
        Mode::Alloc => alloc(config.bytes),
        Mode::Escape => return escape(config),
        Mode::Flood => return flood(config.bytes, &mut out).map(|()| ExitCode::SUCCESS),
        Mode::Trap => std::process::abort(),
        Mode::Sleep => std::thread::sleep(Duration::from_secs(config.seconds.unwrap_or(3600))),
        Mode::ExitError => {
            log(Level::Error, "misbehave: failing on purpose");
            return Ok(ExitCode::from(2));
        }
        Mode::BadJson => out.write_line("{not json")?,
        Mode::UndeclaredStream => {
            out.write(&Message::record("undeclared", json!({"id": 1})))?;
            out.write(&Message::state(json!({"undeclared": 1})))?;
        }
        Mode::EarlyState => {
            out.write(&Message::state(json!({"early": true})))?;
            std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink())?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn spin() {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

fn alloc(limit: Option<u64>) {
    const CHUNK: usize = 1 << 20;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut total: u64 = 0;
    while limit.is_none_or(|limit| total < limit) {
        let mut chunk = vec![0u8; CHUNK];
        // Touch every page so the memory is really committed, not just reserved.
        chunk.iter_mut().step_by(4096).for_each(|b| *b = 1);
        chunks.push(black_box(chunk));
        total += CHUNK as u64;
    }
    log(
        Level::Info,
        format_args!("allocated {total} bytes in {} chunks", chunks.len()),
    );
}

fn escape(config: &Config) -> Result<ExitCode, PluginError> {
    let path = config.path.clone().unwrap_or_else(|| PathBuf::from("/etc/passwd"));
    match std::fs::File::open(&path).and_then(|mut f| f.read(&mut [0u8; 1])) {
        Ok(_) => {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "ESCAPED")?;
            stdout.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            log(Level::Error, format_args!("cannot open {}: {e}", path.display()));
            Ok(ExitCode::from(3))
        }
    }
}

fn flood<W: Write>(limit: Option<u64>, out: &mut Output<W>) -> Result<(), PluginError> {
    let schema = json!({"type": "object", "properties": {"id": {"type": "integer"}, "pad": {"type": "string"}}});
    out.write(&Message::schema("flood", schema, vec!["id".to_owned()]))?;
    let pad = "x".repeat(100);
    let mut written: u64 = 0;
    let mut id: u64 = 0;
    let mut line = String::with_capacity(200);
    while limit.is_none_or(|limit| written < limit) {
        id += 1;
        line.clear();
        line.push_str(r#"{"type":"RECORD","stream":"flood","record":{"id":"#);
        line.push_str(&id.to_string());
        line.push_str(r#","pad":""#);
        line.push_str(&pad);
        line.push_str(r#""}}"#);
        out.write_line(&line)?;
        written += line.len() as u64 + 1;
    }
    out.flush()
}
