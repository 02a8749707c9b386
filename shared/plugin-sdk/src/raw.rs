//! RECORDs passed on as JSON text: for loaders and transformers that forward records
//! (or only rename and drop their fields) and need not build a JSON tree per record.
//!
//! [`parse_raw`] reads only a RECORD's envelope (`type`, `stream`, `record`,
//! `time_extracted`, `version`); the record object stays the slice of the line it came
//! in, checked for JSON syntax but not taken apart. Whatever is not a plain, valid
//! RECORD (any other type, a field of the wrong type, a duplicated key, a line that is
//! not JSON) is parsed by [`Message::parse_line`], so the messages, their checks and their
//! errors are exactly those of the [`Message`] path; a RECORD found that way is handed
//! out as a [`RawRecord`] too (its record re-serialised), so every RECORD arrives as one.

use std::borrow::Cow;
use std::io::{BufRead, Write};
use std::process::ExitCode;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::run::{echo_if_durable, finish_load};
use crate::{exit_code, Args, Input, LoaderAction, Message, Output, PluginError, ProtocolError};

/// A RECORD whose `record` is kept as JSON text (always an object).
#[derive(Debug, Clone)]
pub struct RawRecord<'a> {
    /// Stream name.
    pub stream: Cow<'a, str>,
    /// The row, exactly as it appeared on the line (re-serialised only when the line
    /// took the [`Message`] path, e.g. for a duplicated key).
    pub record: Cow<'a, RawValue>,
    /// RFC 3339 time the row was extracted, if the tap reports it.
    pub time_extracted: Option<Cow<'a, str>>,
    /// Table version.
    pub version: Option<u64>,
}

impl RawRecord<'_> {
    /// The same RECORD as a [`Message`] (parses the record).
    pub fn to_message(&self) -> Result<Message, ProtocolError> {
        Ok(Message::Record {
            stream: self.stream.clone().into_owned(),
            record: serde_json::from_str(self.record.get()).map_err(ProtocolError::NotJson)?,
            time_extracted: self.time_extracted.clone().map(Cow::into_owned),
            version: self.version,
        })
    }
}

/// A line read by [`parse_raw`].
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A RECORD, its record left as text.
    Record(RawRecord<'a>),
    /// Any other message (never a RECORD).
    Message(Message),
}

/// The fields of a RECORD, as text; everything else is skipped (and checked for syntax).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default)]
    record: Option<&'a RawValue>,
    #[serde(borrow, default)]
    time_extracted: Option<&'a RawValue>,
    #[serde(borrow, default)]
    version: Option<&'a RawValue>,
}

/// A JSON string's value, borrowed when it has no escapes; `None` if `raw` is no string.
fn plain_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

impl<'a> Envelope<'a> {
    /// The RECORD, if this is a valid one of plain shape.
    fn record(self) -> Option<RawRecord<'a>> {
        if !plain_str(self.kind?)?.eq_ignore_ascii_case("RECORD") {
            return None;
        }
        let record = self.record?;
        if !record.get().starts_with('{') {
            return None;
        }
        let time_extracted = match self.time_extracted {
            None => None,
            Some(raw) => Some(plain_str(raw)?),
        };
        let version = match self.version {
            None => None,
            Some(raw) => Some(raw.get().parse::<u64>().ok()?),
        };
        Some(RawRecord {
            stream: plain_str(self.stream?)?,
            record: Cow::Borrowed(record),
            time_extracted,
            version,
        })
    }
}

/// Parses one line, leaving a RECORD's record as text (see the module documentation).
pub fn parse_raw(line: &str) -> Result<Parsed<'_>, ProtocolError> {
    // Only an object: a derived struct would also accept an array of its fields.
    let object = line.trim_start().starts_with('{');
    let envelope = if object {
        serde_json::from_str::<Envelope<'_>>(line).ok()
    } else {
        None
    };
    if let Some(record) = envelope.and_then(Envelope::record) {
        return Ok(Parsed::Record(record));
    }
    match Message::parse_line(line)? {
        Message::Record {
            stream,
            record,
            time_extracted,
            version,
        } => Ok(Parsed::Record(RawRecord {
            stream: Cow::Owned(stream),
            // A parsed Value always serialises.
            record: Cow::Owned(serde_json::value::to_raw_value(&record).map_err(ProtocolError::NotJson)?),
            time_extracted: time_extracted.map(Cow::Owned),
            version,
        })),
        other => Ok(Parsed::Message(other)),
    }
}

impl<R: BufRead> Input<R> {
    /// The next message with RECORDs left as text ([`parse_raw`]); `None` at the end.
    /// Blank lines are skipped and errors carry the 1-based line number, as with
    /// the iterator.
    pub fn next_raw(&mut self) -> Option<Result<Parsed<'_>, PluginError>> {
        match self.read_message_line() {
            Ok(false) => None,
            Ok(true) => {
                let line = self.line_number();
                Some(parse_raw(self.current_line()).map_err(|error| PluginError::Protocol { line, error }))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

impl RawRecord<'_> {
    /// Writes the RECORD as one JSON object (without newline): what
    /// [`Message::write_to`] writes for the parsed message, except that the record keeps
    /// its own spelling.
    pub fn write_to<W: Write>(&self, w: W) -> std::io::Result<()> {
        write_record(w, &self.stream, self.time_extracted.as_deref(), self.version, |w| {
            w.write_all(self.record.get().as_bytes())
        })
    }
}

/// Writes a RECORD of `stream` (without newline) whose record object `body` writes as
/// JSON text, with the fields in the order [`Message`] serialises them.
pub fn write_record<W: Write>(
    mut w: W,
    stream: &str,
    time_extracted: Option<&str>,
    version: Option<u64>,
    body: impl FnOnce(&mut W) -> std::io::Result<()>,
) -> std::io::Result<()> {
    w.write_all(br#"{"type":"RECORD","stream":"#)?;
    write_json_str(&mut w, stream)?;
    w.write_all(br#","record":"#)?;
    body(&mut w)?;
    if let Some(time) = time_extracted {
        w.write_all(br#","time_extracted":"#)?;
        write_json_str(&mut w, time)?;
    }
    if let Some(version) = version {
        write!(w, r#","version":{version}"#)?;
    }
    w.write_all(b"}")
}

impl<W: Write> Output<W> {
    /// Writes a RECORD whose record is JSON text ([`RawRecord::write_to`]) and a newline.
    pub fn write_raw_record(&mut self, record: &RawRecord<'_>) -> Result<(), PluginError> {
        let w = self.writer_mut();
        record
            .write_to(&mut *w)
            .and_then(|()| w.write_all(b"\n"))
            .map_err(PluginError::from_output)
    }

    /// Writes a RECORD ([`write_record`]) whose record object `body` writes, and a newline.
    pub fn write_record_with(
        &mut self,
        stream: &str,
        time_extracted: Option<&str>,
        version: Option<u64>,
        body: impl FnOnce(&mut std::io::BufWriter<W>) -> std::io::Result<()>,
    ) -> Result<(), PluginError> {
        let w = self.writer_mut();
        write_record(&mut *w, stream, time_extracted, version, |w| body(w))
            .and_then(|()| w.write_all(b"\n"))
            .map_err(PluginError::from_output)
    }
}

/// Writes `s` as a JSON string (as serde_json escapes it).
pub fn write_json_str(mut w: impl Write, s: &str) -> std::io::Result<()> {
    serde_json::to_writer(&mut w, s).map_err(std::io::Error::from)
}

/// What a raw loader is told: [`LoaderEvent`](crate::LoaderEvent) with RECORDs as text.
#[derive(Debug)]
pub enum RawLoaderEvent<'a> {
    /// A RECORD.
    Record(RawRecord<'a>),
    /// Any message except RECORD and STATE.
    Message(Message),
    /// A STATE arrived; the SDK holds it until the loader answers [`LoaderAction::Durable`].
    State(&'a Value),
    /// Input is over: persist everything and answer `Durable` to echo the last STATE.
    End,
}

/// [`run_loader`](crate::run_loader) with RECORDs as text ([`RawLoaderEvent`]): the same
/// STATE handling, checks and exit codes.
pub fn run_raw_loader<I, L>(init: I) -> ExitCode
where
    I: FnOnce(&Args) -> Result<L, PluginError>,
    L: FnMut(RawLoaderEvent<'_>) -> Result<LoaderAction, PluginError>,
{
    let result = Args::from_env()
        .map_err(PluginError::from)
        .and_then(|args| init(&args))
        .and_then(|f| load_raw(Input::stdin(), &mut Output::stdout(), f));
    exit_code(result)
}

/// The loop behind [`run_raw_loader`], over any input and output.
pub fn load_raw<R, W, L>(mut input: Input<R>, output: &mut Output<W>, mut f: L) -> Result<(), PluginError>
where
    R: BufRead,
    W: Write,
    L: FnMut(RawLoaderEvent<'_>) -> Result<LoaderAction, PluginError>,
{
    let mut held: Option<Value> = None;
    while let Some(parsed) = input.next_raw() {
        let action = match parsed? {
            Parsed::Record(record) => f(RawLoaderEvent::Record(record))?,
            Parsed::Message(Message::State { value }) => f(RawLoaderEvent::State(held.insert(value)))?,
            Parsed::Message(other) => f(RawLoaderEvent::Message(other))?,
        };
        echo_if_durable(action, &mut held, output)?;
    }
    let action = f(RawLoaderEvent::End)?;
    finish_load(action, held, output)
}

/// [`run_transformer`](crate::run_transformer) with RECORDs as text: `f` sees every
/// message ([`Parsed`]) and writes what replaces it to the output itself.
pub fn run_raw_transformer<I, T>(init: I) -> ExitCode
where
    I: FnOnce(&Args) -> Result<T, PluginError>,
    T: FnMut(Parsed<'_>, &mut Output) -> Result<(), PluginError>,
{
    let result = Args::from_env()
        .map_err(PluginError::from)
        .and_then(|args| init(&args))
        .and_then(|f| transform_raw(Input::stdin(), &mut Output::stdout(), f));
    exit_code(result)
}

/// The loop behind [`run_raw_transformer`], over any input and output.
pub fn transform_raw<R, W, T>(mut input: Input<R>, output: &mut Output<W>, mut f: T) -> Result<(), PluginError>
where
    R: BufRead,
    W: Write,
    T: FnMut(Parsed<'_>, &mut Output<W>) -> Result<(), PluginError>,
{
    while let Some(parsed) = input.next_raw() {
        f(parsed?, output)?;
    }
    output.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(line: &str) -> RawRecord<'_> {
        match parse_raw(line).unwrap() {
            Parsed::Record(r) => r,
            Parsed::Message(m) => panic!("not the fast path: {m:?}"),
        }
    }

    #[test]
    fn records_keep_their_text() {
        let r = raw(r#"{"type":"record","stream":"s","record":{"a": 1.50, "b":[1]},"version":3,"x":{"y":null}}"#);
        assert_eq!(r.stream, "s");
        assert_eq!(r.record.get(), r#"{"a": 1.50, "b":[1]}"#);
        assert_eq!(r.version, Some(3));
        let mut out = Output::new(Vec::new());
        out.write_raw_record(&r).unwrap();
        assert_eq!(
            String::from_utf8(out.into_inner().unwrap()).unwrap(),
            "{\"type\":\"RECORD\",\"stream\":\"s\",\"record\":{\"a\": 1.50, \"b\":[1]},\"version\":3}\n"
        );
        let r = raw("{\"type\":\"RECORD\",\"stream\":\"a\\\"b\",\"record\":{},\"time_extracted\":\"t\"}\r\n");
        assert_eq!(r.stream, "a\"b");
        assert_eq!(r.time_extracted.as_deref(), Some("t"));
        assert_eq!(r.to_message().unwrap(), {
            let mut m = Message::record("a\"b", json!({}));
            if let Message::Record { time_extracted, .. } = &mut m {
                *time_extracted = Some("t".into());
            }
            m
        });
    }

    #[test]
    fn the_same_line_is_written_as_by_the_message_path() {
        let line = r#"{"type":"RECORD","stream":"s\u00e9","record":{"a":1,"b":"x"},"time_extracted":"2026-01-01T00:00:00Z","version":7}"#;
        let mut fast = Output::new(Vec::new());
        fast.write_raw_record(&raw(line)).unwrap();
        let mut slow = Output::new(Vec::new());
        slow.write(&Message::parse_line(line).unwrap()).unwrap();
        assert_eq!(fast.into_inner().unwrap(), slow.into_inner().unwrap());
    }

    #[test]
    fn everything_else_takes_the_message_path_with_its_errors() {
        let message = |line: &str| match parse_raw(line) {
            Ok(Parsed::Message(m)) => Ok(m),
            Ok(Parsed::Record(r)) => panic!("fast path for {line}: {r:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(
            message(r#"{"type":"STATE","value":1}"#).unwrap(),
            Message::state(json!(1))
        );
        // Duplicated keys: the last wins, as in the message path; still a RawRecord.
        let Ok(Parsed::Record(r)) = parse_raw(r#"{"type":"RECORD","stream":"s","record":{"a":1},"record":{"a": 2}}"#)
        else {
            panic!("not a record")
        };
        assert_eq!(r.record.get(), r#"{"a":2}"#);
        for (line, error) in [
            ("{not json", "line is not JSON: "),
            ("[1]", "message is not a JSON object"),
            (r#"["RECORD","s",{}]"#, "message is not a JSON object"),
            (r#"{"type":"RECORD","record":{}}"#, "RECORD without \"stream\""),
            (
                r#"{"type":"RECORD","stream":2,"record":{}}"#,
                "RECORD.stream must be a string",
            ),
            (
                r#"{"type":"RECORD","stream":"s","record":[1]}"#,
                "RECORD.record must be an object",
            ),
            (r#"{"type":"RECORD","stream":"s"}"#, "RECORD without \"record\""),
            (
                r#"{"type":"RECORD","stream":"s","record":{},"version":-1}"#,
                "RECORD.version must be a non-negative integer",
            ),
            (
                r#"{"type":"RECORD","stream":"s","record":{},"time_extracted":1}"#,
                "RECORD.time_extracted must be a string",
            ),
            (
                r#"{"type":"RECORD","stream":"s","record":{"a":tru}}"#,
                "line is not JSON: ",
            ),
            (
                "{\"type\":\"RECORD\",\"stream\":\"s\",\"record\":{\"a\":\"\u{1}\"}}",
                "line is not JSON: ",
            ),
        ] {
            let got = message(line).unwrap_err();
            assert!(got.starts_with(error), "{line}: {got}");
        }
    }

    const STREAM: &str = concat!(
        r#"{"type":"SCHEMA","stream":"s","schema":{},"key_properties":[]}"#,
        "\n",
        r#"{"type":"RECORD","stream":"s","record":{"a":1}}"#,
        "\n\n",
        r#"{"type":"STATE","value":1}"#,
        "\n",
        r#"{"type":"RECORD","stream":"s","record":{"a":2}}"#,
        "\n",
        r#"{"type":"STATE","value":2}"#,
        "\n",
    );

    #[test]
    fn raw_loader_sees_records_as_text_and_echoes_state_when_durable() {
        let mut out = Output::new(Vec::new());
        let mut seen = Vec::new();
        load_raw(Input::new(STREAM.as_bytes()), &mut out, |e| {
            seen.push(match &e {
                RawLoaderEvent::Record(r) => r.record.get().to_owned(),
                RawLoaderEvent::Message(m) => m.type_name().to_owned(),
                RawLoaderEvent::State(v) => v.to_string(),
                RawLoaderEvent::End => "end".to_owned(),
            });
            Ok(if matches!(e, RawLoaderEvent::State(_)) {
                LoaderAction::Durable
            } else {
                LoaderAction::Pending
            })
        })
        .unwrap();
        assert_eq!(seen, ["SCHEMA", r#"{"a":1}"#, "1", r#"{"a":2}"#, "2", "end"]);
        assert_eq!(
            String::from_utf8(out.into_inner().unwrap()).unwrap(),
            "{\"type\":\"STATE\",\"value\":1}\n{\"type\":\"STATE\",\"value\":2}\n"
        );
        let e = load_raw(
            Input::new("\n{\"type\":\"RECORD\",\"stream\":\"s\"}\n".as_bytes()),
            &mut Output::new(Vec::new()),
            |_| Ok(LoaderAction::Durable),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "line 2: RECORD without \"record\"");
    }

    #[test]
    fn raw_transformer_writes_what_f_writes() {
        let mut out = Output::new(Vec::new());
        transform_raw(Input::new(STREAM.as_bytes()), &mut out, |parsed, out| match parsed {
            Parsed::Record(r) => out.write_raw_record(&r),
            Parsed::Message(m) => out.write(&m),
        })
        .unwrap();
        let text = String::from_utf8(out.into_inner().unwrap()).unwrap();
        assert_eq!(text, STREAM.replace("\n\n", "\n"));
    }
}
