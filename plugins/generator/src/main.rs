//! Synthetic-record extractor for benchmarks: a SCHEMA, then `records` small RECORDs and
//! a STATE every `state_every` records and at the end.
//!
//! # Layout
//!
//! Everything lives here: [`Config`], the catalog for `--discover`, and [`generate`],
//! which formats records straight into one reused line buffer (no JSON tree per record).

use std::fmt::Write as _;
use std::process::ExitCode;

use flexcore_plugin_sdk::serde_json::{self, json, Value};
use flexcore_plugin_sdk::{metric_counter, run_extractor, Message, Output, PluginError};
use serde::Deserialize;

/// The plugin's config (see `config.schema.json`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// How many records to emit.
    records: u64,
    /// Stream name.
    #[serde(default = "default_stream")]
    stream: String,
    /// Emit a STATE after this many records (0: only at the end).
    #[serde(default = "default_state_every")]
    state_every: u64,
}

fn default_stream() -> String {
    "gen".to_owned()
}

fn default_state_every() -> u64 {
    10_000
}

fn main() -> ExitCode {
    run_extractor(|args, out| {
        let config: Config = args.config()?;
        if args.discover {
            let catalog = json!({"streams": [{
                "tap_stream_id": config.stream, "stream": config.stream, "schema": schema(),
                "key_properties": ["id"],
                "metadata": [{"breadcrumb": [], "metadata": {"selected-by-default": true, "table-key-properties": ["id"]}}],
            }]});
            return out.write_line(&catalog.to_string());
        }
        generate(&config, out)
    })
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "value": {"type": "integer"},
            "ts": {"type": "string", "format": "date-time"},
        },
    })
}

/// Writes the SCHEMA, the records and the STATEs.
fn generate<W: std::io::Write>(config: &Config, out: &mut Output<W>) -> Result<(), PluginError> {
    out.write(&Message::schema(&config.stream, schema(), vec!["id".to_owned()]))?;
    let stream = serde_json::to_string(&config.stream).map_err(PluginError::msg)?;
    let mut line = String::with_capacity(160);
    for i in 1..=config.records {
        line.clear();
        // Writing into a String cannot fail.
        let _ = write!(
            line,
            r#"{{"type":"RECORD","stream":{stream},"record":{{"id":{i},"name":"name-{i}","value":{},"ts":"2026-01-01T00:00:00Z"}}}}"#,
            i.wrapping_mul(3) % 1000
        );
        out.write_line(&line)?;
        if config.state_every > 0 && i % config.state_every == 0 && i != config.records {
            out.write(&Message::state(json!({ "generated": i })))?;
        }
    }
    out.write(&Message::state(json!({ "generated": config.records })))?;
    metric_counter("record_count", config.records, &[("stream", &config.stream)]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flexcore_plugin_sdk::Input;

    #[test]
    fn records_are_valid_singer_messages() {
        let config = Config {
            records: 3,
            stream: "we\"ird".into(),
            state_every: 2,
        };
        let mut out = Output::new(Vec::new());
        generate(&config, &mut out).unwrap();
        let bytes = out.into_inner().unwrap();
        let messages: Vec<Message> = Input::new(bytes.as_slice()).map(|m| m.unwrap()).collect();
        assert_eq!(messages.len(), 1 + 3 + 2);
        assert_eq!(
            messages[1],
            Message::record(
                "we\"ird",
                json!({"id": 1, "name": "name-1", "value": 3, "ts": "2026-01-01T00:00:00Z"})
            )
        );
        assert_eq!(messages[3], Message::state(json!({"generated": 2})));
        assert_eq!(messages[5], Message::state(json!({"generated": 3})));
    }
}
