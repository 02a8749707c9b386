//! Singer messages: one JSON object per line, parsed once into a [`Value`] and then
//! taken apart without copying.

use serde::Serialize;
use serde_json::{Map, Value};

/// A Singer message (see the Singer SPEC: SCHEMA, RECORD, STATE plus the common
/// ACTIVATE_VERSION and BATCH extensions; any other type is allowed and passed through).
///
/// Serialised by serde as the SPEC writes it (`type` first, absent options left out);
/// parsed by hand ([`Message::from_value`]), since parsing must match `type`
/// case-insensitively, take the object apart without copying and name what is wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Message {
    /// Describes the records of `stream`; a later SCHEMA for the same stream replaces it.
    Schema {
        /// Stream name.
        stream: String,
        /// JSON Schema of the stream's records (always an object).
        schema: Value,
        /// Primary-key columns; targets upsert on them (delivery is at-least-once).
        key_properties: Vec<String>,
        /// Columns the tap bookmarks on, if it says so.
        #[serde(skip_serializing_if = "Option::is_none")]
        bookmark_properties: Option<Vec<String>>,
    },
    /// One row of `stream`.
    Record {
        /// Stream name.
        stream: String,
        /// The row; always a JSON object.
        record: Value,
        /// RFC 3339 time the row was extracted, if the tap reports it.
        #[serde(skip_serializing_if = "Option::is_none")]
        time_extracted: Option<String>,
        /// Table version (used together with ACTIVATE_VERSION).
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
    },
    /// A checkpoint; `value` is opaque and owned by the tap.
    State {
        /// The state payload, passed on unchanged.
        value: Value,
    },
    /// Makes `version` the live version of `stream` (records of older versions can go).
    ActivateVersion {
        /// Stream name.
        stream: String,
        /// Version that becomes active.
        version: u64,
    },
    /// A BATCH message (a manifest of files holding raw records), kept whole.
    #[serde(untagged)]
    Batch(Value),
    /// A message of a type this SDK does not know, kept whole.
    #[serde(untagged)]
    Other(Value),
}

/// Why a line is not a valid Singer message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The line does not parse as JSON.
    #[error("line is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// The line is JSON but not an object.
    #[error("message is not a JSON object")]
    NotObject,
    /// The object has no `type` field.
    #[error("message has no \"type\"")]
    NoType,
    /// `type` is present but not a string.
    #[error("message \"type\" is not a string")]
    TypeNotString,
    /// A required field is missing (or null).
    #[error("{kind} without \"{field}\"")]
    MissingField {
        /// Message type, e.g. `RECORD`.
        kind: &'static str,
        /// Missing field name.
        field: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("{kind}.{field} must be {expected}")]
    InvalidField {
        /// Message type, e.g. `RECORD`.
        kind: &'static str,
        /// Offending field name.
        field: &'static str,
        /// What the field must be, e.g. `an object`.
        expected: &'static str,
    },
}

const SCHEMA: &str = "SCHEMA";
const RECORD: &str = "RECORD";
const STATE: &str = "STATE";
const ACTIVATE_VERSION: &str = "ACTIVATE_VERSION";
const BATCH: &str = "BATCH";

impl Message {
    /// Parses one line (a trailing `\n` / `\r\n` is fine). `type` is matched
    /// case-insensitively; unknown types become [`Message::Other`].
    pub fn parse_line(line: &str) -> Result<Message, ProtocolError> {
        Self::from_value(serde_json::from_str(line).map_err(ProtocolError::NotJson)?)
    }

    /// Like [`Message::parse_line`] for raw bytes (must be UTF-8 JSON).
    pub fn parse_bytes(line: &[u8]) -> Result<Message, ProtocolError> {
        Self::from_value(serde_json::from_slice(line).map_err(ProtocolError::NotJson)?)
    }

    /// Interprets an already parsed JSON value as a message.
    pub fn from_value(value: Value) -> Result<Message, ProtocolError> {
        let Value::Object(mut map) = value else {
            return Err(ProtocolError::NotObject);
        };
        let kind = match map.get("type") {
            None | Some(Value::Null) => return Err(ProtocolError::NoType),
            Some(Value::String(kind)) => kind,
            Some(_) => return Err(ProtocolError::TypeNotString),
        };
        // RECORD first: it is by far the most frequent message.
        if kind.eq_ignore_ascii_case(RECORD) {
            let stream = take_string(&mut map, RECORD, "stream")?;
            let record = match map.remove("record") {
                None | Some(Value::Null) => return Err(missing(RECORD, "record")),
                Some(record @ Value::Object(_)) => record,
                Some(_) => return Err(invalid(RECORD, "record", "an object")),
            };
            let time_extracted = take_opt_string(&mut map, RECORD, "time_extracted")?;
            let version = take_opt_u64(&mut map, RECORD, "version")?;
            Ok(Message::Record {
                stream,
                record,
                time_extracted,
                version,
            })
        } else if kind.eq_ignore_ascii_case(STATE) {
            match map.remove("value") {
                None => Err(missing(STATE, "value")),
                Some(value) => Ok(Message::State { value }),
            }
        } else if kind.eq_ignore_ascii_case(SCHEMA) {
            let stream = take_string(&mut map, SCHEMA, "stream")?;
            let schema = match map.remove("schema") {
                None | Some(Value::Null) => return Err(missing(SCHEMA, "schema")),
                Some(schema @ Value::Object(_)) => schema,
                Some(_) => return Err(invalid(SCHEMA, "schema", "an object")),
            };
            // The SPEC requires key_properties, but taps that omit it mean "no key".
            let key_properties = take_string_list(&mut map, SCHEMA, "key_properties")?.unwrap_or_default();
            let bookmark_properties = take_string_list(&mut map, SCHEMA, "bookmark_properties")?;
            Ok(Message::Schema {
                stream,
                schema,
                key_properties,
                bookmark_properties,
            })
        } else if kind.eq_ignore_ascii_case(ACTIVATE_VERSION) {
            let stream = take_string(&mut map, ACTIVATE_VERSION, "stream")?;
            let version =
                take_opt_u64(&mut map, ACTIVATE_VERSION, "version")?.ok_or(missing(ACTIVATE_VERSION, "version"))?;
            Ok(Message::ActivateVersion { stream, version })
        } else if kind.eq_ignore_ascii_case(BATCH) {
            if kind != BATCH {
                map.insert("type".to_owned(), Value::String(BATCH.to_owned()));
            }
            Ok(Message::Batch(Value::Object(map)))
        } else {
            Ok(Message::Other(Value::Object(map)))
        }
    }

    /// Serialises the message as one JSON line (without the trailing newline).
    pub fn to_line(&self) -> String {
        // Serialising a Value tree with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Writes the message as JSON (without newline) to `writer`.
    pub fn write_to<W: std::io::Write>(&self, writer: W) -> std::io::Result<()> {
        serde_json::to_writer(writer, self).map_err(std::io::Error::from)
    }

    /// The message type as it appears on the wire (`RECORD`, …; for unknown types the
    /// original spelling).
    pub fn type_name(&self) -> &str {
        match self {
            Message::Schema { .. } => SCHEMA,
            Message::Record { .. } => RECORD,
            Message::State { .. } => STATE,
            Message::ActivateVersion { .. } => ACTIVATE_VERSION,
            Message::Batch(_) => BATCH,
            Message::Other(value) => value.get("type").and_then(Value::as_str).unwrap_or(""),
        }
    }

    /// The stream the message is about, if any.
    pub fn stream(&self) -> Option<&str> {
        match self {
            Message::Schema { stream, .. }
            | Message::Record { stream, .. }
            | Message::ActivateVersion { stream, .. } => Some(stream),
            Message::Batch(value) | Message::Other(value) => value.get("stream").and_then(Value::as_str),
            Message::State { .. } => None,
        }
    }

    /// A RECORD without `time_extracted` or `version`.
    pub fn record(stream: impl Into<String>, record: Value) -> Message {
        Message::Record {
            stream: stream.into(),
            record,
            time_extracted: None,
            version: None,
        }
    }

    /// A SCHEMA without `bookmark_properties`.
    pub fn schema(stream: impl Into<String>, schema: Value, key_properties: Vec<String>) -> Message {
        Message::Schema {
            stream: stream.into(),
            schema,
            key_properties,
            bookmark_properties: None,
        }
    }

    /// A STATE carrying `value`.
    pub fn state(value: Value) -> Message {
        Message::State { value }
    }
}

fn missing(kind: &'static str, field: &'static str) -> ProtocolError {
    ProtocolError::MissingField { kind, field }
}

fn invalid(kind: &'static str, field: &'static str, expected: &'static str) -> ProtocolError {
    ProtocolError::InvalidField { kind, field, expected }
}

fn take_string(map: &mut Map<String, Value>, kind: &'static str, field: &'static str) -> Result<String, ProtocolError> {
    match map.remove(field) {
        None | Some(Value::Null) => Err(missing(kind, field)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(kind, field, "a string")),
    }
}

fn take_opt_string(
    map: &mut Map<String, Value>,
    kind: &'static str,
    field: &'static str,
) -> Result<Option<String>, ProtocolError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(kind, field, "a string")),
    }
}

fn take_opt_u64(
    map: &mut Map<String, Value>,
    kind: &'static str,
    field: &'static str,
) -> Result<Option<u64>, ProtocolError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or(invalid(kind, field, "a non-negative integer")),
        Some(_) => Err(invalid(kind, field, "a non-negative integer")),
    }
}

fn take_string_list(
    map: &mut Map<String, Value>,
    kind: &'static str,
    field: &'static str,
) -> Result<Option<Vec<String>>, ProtocolError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                _ => Err(invalid(kind, field, "an array of strings")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(invalid(kind, field, "an array of strings")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(line: &str) -> String {
        Message::parse_line(line).unwrap_err().to_string()
    }

    #[test]
    fn types_are_case_insensitive() {
        let m = Message::parse_line(r#"{"type":"record","stream":"s","record":{"a":1}}"#).unwrap();
        assert_eq!(m, Message::record("s", json!({"a": 1})));
        let m = Message::parse_line(r#"{"type":"State","value":{"x":1}}"#).unwrap();
        assert_eq!(m, Message::state(json!({"x": 1})));
        let m = Message::parse_line(r#"{"type":"schema","stream":"s","schema":{},"key_properties":["id"]}"#).unwrap();
        assert_eq!(m, Message::schema("s", json!({}), vec!["id".into()]));
        let m = Message::parse_line(r#"{"type":"activate_version","stream":"s","version":3}"#).unwrap();
        assert_eq!(
            m,
            Message::ActivateVersion {
                stream: "s".into(),
                version: 3
            }
        );
    }

    #[test]
    fn every_error_is_clear() {
        assert!(err("{not json").starts_with("line is not JSON: "));
        assert_eq!(err("[1]"), "message is not a JSON object");
        assert_eq!(err(r#"{"stream":"s"}"#), "message has no \"type\"");
        assert_eq!(err(r#"{"type":1}"#), "message \"type\" is not a string");
        assert_eq!(err(r#"{"type":"RECORD","record":{}}"#), "RECORD without \"stream\"");
        assert_eq!(err(r#"{"type":"RECORD","stream":"s"}"#), "RECORD without \"record\"");
        assert_eq!(
            err(r#"{"type":"RECORD","stream":"s","record":[1]}"#),
            "RECORD.record must be an object"
        );
        assert_eq!(
            err(r#"{"type":"RECORD","stream":2,"record":{}}"#),
            "RECORD.stream must be a string"
        );
        assert_eq!(
            err(r#"{"type":"RECORD","stream":"s","record":{},"version":-1}"#),
            "RECORD.version must be a non-negative integer"
        );
        assert_eq!(err(r#"{"type":"STATE"}"#), "STATE without \"value\"");
        assert_eq!(err(r#"{"type":"SCHEMA","stream":"s"}"#), "SCHEMA without \"schema\"");
        assert_eq!(
            err(r#"{"type":"SCHEMA","stream":"s","schema":true}"#),
            "SCHEMA.schema must be an object"
        );
        assert_eq!(
            err(r#"{"type":"SCHEMA","stream":"s","schema":{},"key_properties":[1]}"#),
            "SCHEMA.key_properties must be an array of strings"
        );
        assert_eq!(
            err(r#"{"type":"ACTIVATE_VERSION","stream":"s"}"#),
            "ACTIVATE_VERSION without \"version\""
        );
    }

    #[test]
    fn round_trips() {
        let lines = [
            r#"{"type":"SCHEMA","stream":"s","schema":{"type":"object"},"key_properties":["id"],"bookmark_properties":["ts"]}"#,
            r#"{"type":"RECORD","stream":"s","record":{"id":1},"time_extracted":"2026-01-01T00:00:00Z","version":7}"#,
            r#"{"type":"STATE","value":{"bookmarks":{}}}"#,
            r#"{"type":"ACTIVATE_VERSION","stream":"s","version":7}"#,
            r#"{"manifest":["a.jsonl"],"stream":"s","type":"BATCH"}"#,
            r#"{"type":"weird","x":1}"#,
        ];
        for line in lines {
            let msg = Message::parse_line(line).unwrap();
            // Byte for byte: `type` first, the SPEC's field order, nothing added.
            assert_eq!(msg.to_line(), line);
            assert_eq!(Message::parse_line(&msg.to_line()).unwrap(), msg);
        }
    }

    #[test]
    fn serialises_uppercase_and_keeps_unknown_types() {
        let m = Message::parse_line(r#"{"type":"batch","stream":"s","manifest":[]}"#).unwrap();
        assert!(matches!(m, Message::Batch(_)));
        assert_eq!(m.type_name(), "BATCH");
        assert!(m.to_line().contains(r#""type":"BATCH""#));
        let m = Message::parse_line(r#"{"type":"record","stream":"s","record":{}}"#).unwrap();
        assert_eq!(m.to_line(), r#"{"type":"RECORD","stream":"s","record":{}}"#);
        let m = Message::parse_line("{\"type\":\"Metric\",\"stream\":\"s\"}\r\n").unwrap();
        assert_eq!(m.type_name(), "Metric");
        assert_eq!(m.stream(), Some("s"));
    }

    #[test]
    fn schema_without_key_properties_means_no_key() {
        let m = Message::parse_line(r#"{"type":"SCHEMA","stream":"s","schema":{}}"#).unwrap();
        assert_eq!(m, Message::schema("s", json!({}), vec![]));
    }

    #[test]
    fn parse_bytes_matches_parse_line() {
        let line = r#"{"type":"STATE","value":1}"#;
        assert_eq!(
            Message::parse_bytes(line.as_bytes()).unwrap(),
            Message::parse_line(line).unwrap()
        );
    }
}
