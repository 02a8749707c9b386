//! The host's view of the Singer stream.
//!
//! The host observes exactly two places: the hop INTO the loader (the output of the last
//! extractor/transformer, relayed byte-for-byte) and the loader's stdout. Earlier hops are
//! plain pipes between guests: observing them would double the parsing cost for nothing
//! the loader-side view does not already catch (counts are what the loader received).
//!
//! On the relayed hop every line must be a JSON object with a `type`; a SCHEMA declares
//! its stream; a RECORD must name a declared stream and is counted; a STATE's `value` is
//! remembered with the counts at that point. On the loader's stdout every STATE is a
//! checkpoint and must equal a STATE already sent to the loader. Lines are parsed into a
//! borrowed two-field struct, so a RECORD costs one scan and one map lookup.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;

use flexcore_contracts::model::StreamCounters;
use flexcore_contracts::OpaqueJson;
use parking_lot::Mutex;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::failure::{code, ExecFailure, Stop};
use super::lines::Lines;
use super::pipe::{PipeReader, PipeWriter, WriteError};
use super::{Emitter, ExecEvent};

/// STATEs sent to the loader and not yet echoed are kept up to this many; older ones are
/// forgotten (a loader echoing one of those is believed, with the newest forgotten counts).
const MAX_PENDING_STATES: usize = 100_000;

/// A JSON string, borrowed from the line unless it had escapes.
#[derive(Debug)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(V(PhantomData))
    }
}

/// The only fields the host reads of most messages.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Text<'a>,
    #[serde(default, borrow)]
    stream: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct StateMessage {
    value: Box<serde_json::value::RawValue>,
}

/// A STATE value: parsed to match a loader's echo with what was sent (loaders may write
/// it with other spacing or key order), and the loader's exact text, which is committed.
#[derive(Debug, Clone)]
pub(crate) struct StateValue {
    parsed: Value,
    text: OpaqueJson,
}

impl StateValue {
    fn from_text(text: &str) -> Result<Self, serde_json::Error> {
        Ok(Self {
            parsed: serde_json::from_str(text)?,
            text: OpaqueJson::parse(text)?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Record,
    Schema,
    State,
    Other,
}

fn parse(line: &[u8], n: u64) -> Result<(Kind, Option<Text<'_>>), String> {
    let msg: Envelope<'_> = serde_json::from_slice(line).map_err(|e| {
        if serde_json::from_slice::<IgnoredAny>(line).is_ok() {
            format!("line {n} is not a Singer message (a JSON object with a string \"type\"): {e}")
        } else {
            format!("line {n} is not JSON: {e}")
        }
    })?;
    // Singer message types are case-insensitive.
    let kind = match &*msg.kind.0 {
        k if k.eq_ignore_ascii_case("RECORD") => Kind::Record,
        k if k.eq_ignore_ascii_case("SCHEMA") => Kind::Schema,
        k if k.eq_ignore_ascii_case("STATE") => Kind::State,
        _ => Kind::Other,
    };
    Ok((kind, msg.stream))
}

/// A loader's STATE echo: a Singer STATE message or, as singer-io targets and Meltano SDK
/// targets print it, the bare state value as a JSON object on its own line. Other
/// messages on the loader's stdout are ignored.
fn loader_state(line: &[u8], n: u64) -> Result<Option<StateValue>, String> {
    match parse(line, n) {
        Ok((Kind::State, _)) => state_value(line, n).map(Some),
        Ok(_) => Ok(None),
        Err(e) => match std::str::from_utf8(line).ok().map(StateValue::from_text) {
            Some(Ok(value)) if value.parsed.is_object() => Ok(Some(value)),
            _ => Err(e),
        },
    }
}

fn state_value(line: &[u8], n: u64) -> Result<StateValue, String> {
    let bad = |e: &dyn fmt::Display| format!("line {n}: STATE without a valid \"value\": {e}");
    let message = serde_json::from_slice::<StateMessage>(line).map_err(|e| bad(&e))?;
    StateValue::from_text(message.value.get()).map_err(|e| bad(&e))
}

/// STATEs sent to the loader, in order, with the record counts at each.
#[derive(Default)]
pub(crate) struct Ledger {
    sent: VecDeque<(Value, StreamCounters)>,
    forgotten: Option<StreamCounters>,
    last_acked: Option<(Value, StreamCounters)>,
}

impl Ledger {
    fn sent(&mut self, value: Value, counters: StreamCounters) {
        if self.sent.len() >= MAX_PENDING_STATES {
            self.forgotten = self.sent.pop_front().map(|(_, c)| c);
        }
        self.sent.push_back((value, counters));
    }

    /// The counts covered by a loader's STATE, `None` if that STATE was never sent.
    /// Loaders may skip intermediate STATEs, so everything up to the match is settled.
    fn ack(&mut self, value: &Value) -> Option<StreamCounters> {
        if let Some(pos) = self.sent.iter().position(|(v, _)| v == value) {
            let matched = self.sent.drain(..=pos).next_back()?;
            let counters = matched.1.clone();
            self.last_acked = Some(matched);
            return Some(counters);
        }
        match &self.last_acked {
            Some((v, counters)) if v == value => Some(counters.clone()),
            _ => self.forgotten.clone(),
        }
    }
}

#[derive(Default)]
struct Tally {
    declared: bool,
    records: u64,
}

fn counters(tally: &HashMap<String, Tally>) -> StreamCounters {
    tally.iter().map(|(stream, t)| (stream.clone(), t.records)).collect()
}

fn protocol(step: usize, name: &str, problem: impl fmt::Display) -> Stop {
    Stop::Failed(ExecFailure::at(step, name, code::PROTOCOL, problem, false))
}

/// Relays step `step`'s output into the loader unchanged, validating and counting it.
/// Returns the final counts.
pub(crate) async fn relay(
    input: &PipeReader,
    output: &PipeWriter,
    (step, name): (usize, &str),
    ledger: &Mutex<Ledger>,
    max_line: usize,
) -> Result<StreamCounters, Stop> {
    let mut tally: HashMap<String, Tally> = HashMap::new();
    let mut lines = Lines::new(max_line);
    let mut n = 0u64;
    let mut observe = |line: &[u8], truncated: bool| -> Result<(), String> {
        n += 1;
        if truncated {
            return Err(format!("line {n} is longer than {max_line} bytes"));
        }
        let line = line.trim_ascii();
        if line.is_empty() {
            return Ok(());
        }
        let (kind, stream) = parse(line, n)?;
        match kind {
            Kind::Record => {
                let stream = stream.ok_or_else(|| format!("line {n}: RECORD without a \"stream\""))?;
                match tally.get_mut(&*stream.0) {
                    Some(t) if t.declared => t.records += 1,
                    _ => return Err(format!("line {n}: RECORD for undeclared stream {:?}", stream.0)),
                }
            }
            Kind::Schema => {
                let stream = stream.ok_or_else(|| format!("line {n}: SCHEMA without a \"stream\""))?;
                match tally.get_mut(&*stream.0) {
                    Some(t) => t.declared = true,
                    None => {
                        tally.insert(
                            stream.0.into_owned(),
                            Tally {
                                declared: true,
                                records: 0,
                            },
                        );
                    }
                }
            }
            Kind::State => {
                // Remembered before the bytes are forwarded, so the loader cannot echo it first.
                let value = state_value(line, n)?;
                ledger.lock().sent(value.parsed, counters(&tally));
            }
            Kind::Other => {}
        }
        Ok(())
    };
    while let Some(chunk) = input.chunk().await {
        lines.feed(&chunk, &mut observe).map_err(|p| protocol(step, name, p))?;
        if lines.overflowing() {
            return Err(protocol(step, name, format!("a line is longer than {max_line} bytes")));
        }
        match output.write(chunk).await {
            Ok(()) => {}
            // The loader stopped reading; its own exit tells whether that was a failure.
            Err(WriteError::Closed) => break,
            Err(WriteError::LimitExceeded) => {
                return Err(ExecFailure::internal(Some(step), "relay pipe refused a write").into())
            }
        }
    }
    lines.finish(&mut observe).map_err(|p| protocol(step, name, p))?;
    Ok(counters(&tally))
}

/// Reads the loader's stdout: every STATE becomes a checkpoint event. Returns the last.
pub(crate) async fn checkpoints(
    input: &PipeReader,
    (step, name): (usize, &str),
    ledger: &Mutex<Ledger>,
    events: &Emitter,
    max_line: usize,
) -> Result<Option<OpaqueJson>, Stop> {
    let mut lines = Lines::new(max_line);
    let mut n = 0u64;
    let mut last = None;
    let mut found: Vec<(OpaqueJson, StreamCounters)> = Vec::new();
    let mut observe =
        |line: &[u8], truncated: bool, found: &mut Vec<(OpaqueJson, StreamCounters)>| -> Result<(), String> {
            n += 1;
            if truncated {
                return Err(format!("line {n} is longer than {max_line} bytes"));
            }
            let line = line.trim_ascii();
            if line.is_empty() {
                return Ok(());
            }
            if let Some(value) = loader_state(line, n)? {
                let counters = ledger
                    .lock()
                    .ack(&value.parsed)
                    .ok_or_else(|| format!("line {n}: a loader STATE for records not yet sent: {}", value.parsed))?;
                found.push((value.text, counters));
            }
            Ok(())
        };
    let mut end = false;
    while !end {
        let result = match input.chunk().await {
            Some(chunk) => lines.feed(&chunk, |l, t| observe(l, t, &mut found)),
            None => {
                end = true;
                lines.finish(|l, t| observe(l, t, &mut found))
            }
        };
        // Checkpoints before a bad line still count: they are durable progress.
        for (state, counters) in found.drain(..) {
            last = Some(state.clone());
            events.emit(ExecEvent::Checkpoint { state, counters }, true).await;
        }
        result.map_err(|p| protocol(step, name, p))?;
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_borrow_and_accept_escapes_and_any_case() {
        let line = br#"{"record":{"a":[1,{"type":"x"}]},"type":"record","stream":"us\u0065rs"}"#;
        let (kind, stream) = parse(line, 1).unwrap();
        assert!(kind == Kind::Record);
        assert_eq!(stream.unwrap().0, "users");
        assert!(parse(b"{nope", 7).unwrap_err().starts_with("line 7 is not JSON"));
        assert!(parse(b"[1]", 2).unwrap_err().contains("not a Singer message"));
        let bare = loader_state(br#"{"bookmarks":{"a":1}}"#, 1).unwrap().unwrap();
        assert_eq!(bare.parsed, serde_json::json!({"bookmarks": {"a": 1}}));
        assert_eq!(bare.text.as_str(), r#"{"bookmarks":{"a":1}}"#);
        let message = loader_state(br#"{"type":"STATE","value":{"b":0.10, "a":1}}"#, 1)
            .unwrap()
            .unwrap();
        assert_eq!(message.parsed, serde_json::json!({"a": 1, "b": 0.1}));
        assert_eq!(message.text.as_str(), r#"{"b":0.10, "a":1}"#);
        assert!(loader_state(br#"{"type":"RECORD","stream":"s","record":{}}"#, 1)
            .unwrap()
            .is_none());
        assert!(loader_state(b"[1]", 1).is_err());
        assert!(loader_state(b"{oops", 1).is_err());
        assert!(parse(br#"{"stream":"a"}"#, 3)
            .unwrap_err()
            .contains("not a Singer message"));
    }

    #[test]
    fn the_ledger_settles_skipped_states_and_refuses_unknown_ones() {
        let mut ledger = Ledger::default();
        let c = |n: u64| StreamCounters::from([("s".to_owned(), n)]);
        ledger.sent(serde_json::json!({"p": 1}), c(1));
        ledger.sent(serde_json::json!({"p": 2}), c(2));
        ledger.sent(serde_json::json!({"p": 3}), c(3));
        assert_eq!(ledger.ack(&serde_json::json!({"p": 2})), Some(c(2)));
        assert_eq!(ledger.ack(&serde_json::json!({"p": 2})), Some(c(2)));
        assert_eq!(ledger.ack(&serde_json::json!({"p": 1})), None);
        assert_eq!(ledger.ack(&serde_json::json!({"p": 9})), None);
        assert_eq!(ledger.ack(&serde_json::json!({"p": 3})), Some(c(3)));
    }
}
