//! Sync (SCHEMA, RECORDs, STATE) and discovery (a Singer catalog).

use std::io::Write;

use flexcore_plugin_sdk::serde_json::{json, Value};
use flexcore_plugin_sdk::{log, metric_counter, write_json_str, Level, Message, Output, PluginError};

use crate::bookmark::Bookmarks;
use crate::source::{self, Config, Format};

/// Emit a STATE after this many records (incremental syncs only).
const STATE_EVERY: u64 = 1000;

/// Reads every file and writes the messages; with a replication key only rows above
/// the `state` bookmark are read.
pub fn sync<W: Write>(config: &Config, state: Option<Value>, out: &mut Output<W>) -> Result<(), PluginError> {
    let files = source::files(config)?;
    if files.is_empty() {
        log(
            Level::Warning,
            format_args!("{}: no .csv or .jsonl files", config.path.display()),
        );
    }
    let mut bookmarks = Bookmarks::new(state, config.replication_key.clone());
    let key = config.replication_key.as_deref();
    let mut total = 0u64;
    for file in &files {
        out.write(&Message::Schema {
            stream: file.stream.clone(),
            schema: source::schema(file)?,
            key_properties: config.key_properties.clone(),
            bookmark_properties: config.replication_key.clone().map(|key| vec![key]),
        })?;
        let mut count = 0u64;
        if key.is_none() && file.format == Format::Csv {
            // No bookmarks to keep: each row is written as JSON text straight from its
            // fields (the same bytes the object would serialise to).
            let mut keys: Vec<Vec<u8>> = Vec::new();
            source::csv_rows(file, |columns, fields| {
                if keys.len() != columns.len() {
                    keys = columns.iter().map(|c| json_key(c)).collect();
                }
                out.write_record_with(&file.stream, None, None, |w| {
                    w.write_all(b"{")?;
                    for (i, (key, field)) in keys.iter().zip(fields).enumerate() {
                        if i > 0 {
                            w.write_all(b",")?;
                        }
                        w.write_all(key)?;
                        write_json_str(&mut *w, field)?;
                    }
                    w.write_all(b"}")
                })?;
                count += 1;
                total += 1;
                Ok(())
            })?;
            metric_counter(
                "record_count",
                count,
                &[("stream", &file.stream), ("file", &file.path.to_string_lossy())],
            );
            continue;
        }
        source::rows(file, |record| {
            if let Some(key) = key {
                let progress = bookmarks.stream(&file.stream);
                if !progress.wants(record.get(key)) {
                    return Ok(());
                }
                progress.saw(record.get(key));
            }
            out.write(&Message::record(file.stream.clone(), Value::Object(record)))?;
            count += 1;
            total += 1;
            if key.is_some() && total % STATE_EVERY == 0 {
                out.write(&Message::state(bookmarks.state(false)))?;
            }
            Ok(())
        })?;
        metric_counter(
            "record_count",
            count,
            &[("stream", &file.stream), ("file", &file.path.to_string_lossy())],
        );
    }
    out.write(&Message::state(bookmarks.state(true)))
}

/// `"<column>":` as JSON text.
fn json_key(column: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(column.len() + 3);
    // Writing a string into a Vec cannot fail.
    let _ = write_json_str(&mut key, column);
    key.push(b':');
    key
}

/// Writes a catalog with one entry per stream (the first file of a stream gives its schema).
pub fn discover<W: Write>(config: &Config, out: &mut Output<W>) -> Result<(), PluginError> {
    let mut streams: Vec<Value> = Vec::new();
    for file in source::files(config)? {
        if streams.iter().any(|s| s["stream"] == file.stream.as_str()) {
            continue;
        }
        let schema = source::schema(&file)?;
        let mut metadata = vec![json!({"breadcrumb": [], "metadata": {
            "selected-by-default": true,
            "table-key-properties": config.key_properties,
            "forced-replication-method": if config.replication_key.is_some() { "INCREMENTAL" } else { "FULL_TABLE" },
            "valid-replication-keys": config.replication_key.iter().collect::<Vec<_>>(),
        }})];
        if let Some(properties) = schema["properties"].as_object() {
            for name in properties.keys() {
                let automatic = config.key_properties.contains(name) || config.replication_key.as_ref() == Some(name);
                metadata.push(json!({"breadcrumb": ["properties", name], "metadata": {
                    "inclusion": if automatic { "automatic" } else { "available" }}}));
            }
        }
        streams.push(json!({
            "tap_stream_id": file.stream, "stream": file.stream, "schema": schema,
            "key_properties": config.key_properties, "metadata": metadata,
        }));
    }
    out.write_line(&json!({ "streams": streams }).to_string())
}
