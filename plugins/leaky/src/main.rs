//! A hostile extractor for the runner's secret tests: it tries to get the secrets in its
//! config out through every channel a plugin has — its log lines (raw, JSON-escaped once
//! and twice, percent-encoded, base64 in a Basic auth header, straddling the line cut),
//! the stream names that become counters, its STATE, and a protocol error quoting a
//! stream name — and prints the environment variables it was granted.
//!
//! # Layout
//!
//! Everything lives here: [`Config`], [`leak`], [`undeclared`] and two small encoders
//! (written out rather than taken from the runner's crates, so the test does not check
//! the scrubber against itself).

use std::process::ExitCode;

use flexcore_plugin_sdk::serde_json::{self, json};
use flexcore_plugin_sdk::{exit_code, log, Args, Level, Message, Output, PluginError};
use serde::{Deserialize, Serialize};

/// The plugin's config (see `config.schema.json`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// What to do.
    mode: Mode,
    /// The secret to leak.
    password: String,
    /// The stream name (a secret used where a name goes).
    stream: String,
    /// Environment variables to print.
    #[serde(default)]
    env: Vec<String>,
    /// Where the runner cuts log lines.
    #[serde(default = "default_cut")]
    line_cut: usize,
}

fn default_cut() -> usize {
    4096
}

/// The available behaviours.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    /// Leak through logs, stream names and STATE, then succeed.
    Leak,
    /// A RECORD for an undeclared stream named after `stream`.
    Undeclared,
}

fn main() -> ExitCode {
    let result = Args::from_env()
        .map_err(PluginError::from)
        .and_then(|args| args.config::<Config>());
    exit_code(result.and_then(|config| match config.mode {
        Mode::Leak => leak(&config),
        Mode::Undeclared => undeclared(&config),
    }))
}

fn leak(config: &Config) -> Result<(), PluginError> {
    let pw = &config.password;
    let as_json = serde_json::to_string(config).map_err(PluginError::msg)?;
    log(Level::Info, format_args!("password is {pw}"));
    log(Level::Info, format_args!("config: {as_json}"));
    log(Level::Info, json!({"msg": format!("config: {as_json}")}));
    log(
        Level::Info,
        format_args!("GET https://api.invalid/login?user=u&password={}", percent(pw)),
    );
    log(
        Level::Info,
        format_args!("Authorization: Basic {}", base64(format!("user:{pw}").as_bytes())),
    );
    // "INFO " + padding puts the password's first bytes just before the cut.
    let pad = config.line_cut.saturating_sub("INFO ".len() + 3);
    log(Level::Info, format_args!("{}{pw}{}", "x".repeat(pad), "y".repeat(64)));
    for name in &config.env {
        match std::env::var(name) {
            Ok(value) => log(Level::Info, format_args!("env {name}={value}")),
            Err(_) => log(Level::Info, format_args!("env {name} is not set")),
        }
    }
    let mut out = Output::stdout();
    let schema = json!({"type": "object", "properties": {"id": {"type": "integer"}, "token": {"type": "string"}}});
    out.write(&Message::schema(config.stream.clone(), schema, vec!["id".to_owned()]))?;
    for id in 1..=2 {
        out.write(&Message::record(config.stream.clone(), json!({"id": id, "token": pw})))?;
    }
    out.write(&Message::state(
        json!({"bookmarks": {config.stream.clone(): 2}, "token": pw}),
    ))?;
    out.flush()
}

fn undeclared(config: &Config) -> Result<(), PluginError> {
    let mut out = Output::stdout();
    out.write(&Message::record(config.stream.clone(), json!({"id": 1})))?;
    out.flush()
}

/// Every byte but ASCII letters and digits as `%xx` (lower-case hex, as some clients write it).
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoders_are_right() {
        assert_eq!(base64(b"user:pw"), "dXNlcjpwdw==");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(percent("a b/é"), "a%20b%2f%c3%a9");
    }
}
