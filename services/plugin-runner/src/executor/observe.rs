//! The host's view of the Singer stream.
//!
//! The host observes exactly two places: the hop INTO the loader (the output of the last
//! extractor/transformer, relayed byte-for-byte) and the loader's stdout. Earlier hops are
//! plain pipes between guests: observing them would double the parsing cost for nothing
//! the loader-side view does not already catch (counts are what the loader received).
//!
//! On the relayed hop every line must be a JSON object with a `type`; a SCHEMA declares
//! its stream; a RECORD must name a declared stream and is counted; a STATE's `value` is
//! remembered with the counts at that point. On the loader's stdout every STATE must equal
//! a STATE already sent to the loader and is a checkpoint; checkpoints are coalesced to at
//! most one per [`Defaults::checkpoint_interval`](crate::sandbox::Defaults) (the latest
//! wins; one equal to the last reported is dropped), so a plugin echoing STATEs in a loop
//! cannot grow the event log faster than that. Lines are parsed into a borrowed two-field
//! struct, so a RECORD costs one scan and one map lookup.
//!
//! Memory: a STATE is at most `max_state_bytes` long; what the ledger keeps of a pending
//! STATE is a 128-bit keyed hash of its value (not the value) and a shared snapshot of
//! the counts, taken again only when a count changed. The snapshots' estimated size is
//! capped ([`MAX_PENDING_BYTES`]); beyond it the oldest pending STATEs are forgotten.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

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
/// Estimated bytes of count snapshots kept for pending STATEs before the oldest are
/// forgotten (as [`MAX_PENDING_STATES`]).
pub(crate) const MAX_PENDING_BYTES: usize = 16 << 20;
/// Estimated bytes of one stream's entry in a count snapshot, besides its name.
const COUNTER_ENTRY_BYTES: usize = 64;

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

/// Hashes `value` so that equal JSON values (whatever their key order) hash equally.
fn hash_value(value: &Value, h: &mut impl Hasher) {
    match value {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                (2u8, u).hash(h);
            } else if let Some(i) = n.as_i64() {
                (3u8, i).hash(h);
            } else {
                (4u8, n.as_f64().map(f64::to_bits)).hash(h);
            }
        }
        Value::String(s) => (5u8, s).hash(h),
        Value::Array(items) => {
            (6u8, items.len()).hash(h);
            items.iter().for_each(|item| hash_value(item, h));
        }
        Value::Object(map) => {
            (7u8, map.len()).hash(h);
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (key, item) in entries {
                key.hash(h);
                hash_value(item, h);
            }
        }
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

/// What identifies a STATE value in the ledger: a 128-bit keyed hash (two SipHash-1-3
/// with per-execution random keys, so a plugin cannot aim for a collision).
type StateKey = (u64, u64);

/// STATEs sent to the loader, in order, with the record counts at each.
pub(crate) struct Ledger {
    keys: (RandomState, RandomState),
    sent: VecDeque<(StateKey, Arc<StreamCounters>)>,
    /// Estimated bytes of the distinct count snapshots in `sent`.
    bytes: usize,
    forgotten: Option<Arc<StreamCounters>>,
    last_acked: Option<(StateKey, Arc<StreamCounters>)>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            keys: (RandomState::new(), RandomState::new()),
            sent: VecDeque::new(),
            bytes: 0,
            forgotten: None,
            last_acked: None,
        }
    }
}

/// Estimated heap bytes of a count snapshot.
fn snapshot_bytes(counters: &StreamCounters) -> usize {
    counters.keys().map(|k| k.len() + COUNTER_ENTRY_BYTES).sum()
}

impl Ledger {
    fn key(&self, value: &Value) -> StateKey {
        let (mut a, mut b) = (self.keys.0.build_hasher(), self.keys.1.build_hasher());
        hash_value(value, &mut a);
        hash_value(value, &mut b);
        (a.finish(), b.finish())
    }

    /// Records a STATE sent with `counters`; a snapshot shared with the previous entry
    /// is counted once.
    fn sent(&mut self, value: &Value, counters: Arc<StreamCounters>) {
        let key = self.key(value);
        let shared = self.sent.back().is_some_and(|(_, c)| Arc::ptr_eq(c, &counters));
        if !shared {
            self.bytes += snapshot_bytes(&counters);
        }
        self.sent.push_back((key, counters));
        while self.sent.len() > MAX_PENDING_STATES || (self.bytes > MAX_PENDING_BYTES && self.sent.len() > 1) {
            self.forget_oldest();
        }
    }

    /// Takes the oldest entry off, keeping the byte estimate right.
    fn pop_front(&mut self) -> Option<(StateKey, Arc<StreamCounters>)> {
        let entry = self.sent.pop_front()?;
        let still_used = self.sent.front().is_some_and(|(_, c)| Arc::ptr_eq(c, &entry.1));
        if !still_used {
            self.bytes = self.bytes.saturating_sub(snapshot_bytes(&entry.1));
        }
        Some(entry)
    }

    fn forget_oldest(&mut self) {
        if let Some((_, counters)) = self.pop_front() {
            self.forgotten = Some(counters);
        }
    }

    /// The counts covered by a loader's STATE, `None` if that STATE was never sent.
    /// Loaders may skip intermediate STATEs, so everything up to the match is settled.
    fn ack(&mut self, value: &Value) -> Option<StreamCounters> {
        let key = self.key(value);
        if let Some(pos) = self.sent.iter().position(|(k, _)| *k == key) {
            for _ in 0..pos {
                self.pop_front();
            }
            let matched = self.pop_front()?;
            let counters = StreamCounters::clone(&matched.1);
            self.last_acked = Some(matched);
            return Some(counters);
        }
        match &self.last_acked {
            Some((k, counters)) if *k == key => Some(StreamCounters::clone(counters)),
            _ => self.forgotten.as_deref().cloned(),
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
    (max_line, max_state): (usize, usize),
) -> Result<StreamCounters, Stop> {
    let mut tally: HashMap<String, Tally> = HashMap::new();
    // The counts as of the last STATE, shared until a count changes.
    let mut snapshot: Option<Arc<StreamCounters>> = None;
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
                snapshot = None;
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
                        snapshot = None;
                    }
                }
            }
            Kind::State => {
                too_large(line, n, max_state)?;
                // Remembered before the bytes are forwarded, so the loader cannot echo it first.
                let value = state_value(line, n)?;
                let counts = snapshot.get_or_insert_with(|| Arc::new(counters(&tally)));
                ledger.lock().sent(&value.parsed, Arc::clone(counts));
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

/// A STATE longer than `max` is refused before it is parsed.
fn too_large(line: &[u8], n: u64, max: usize) -> Result<(), String> {
    if line.len() > max {
        return Err(format!(
            "line {n}: a STATE of {} bytes, more than the limit of {max} bytes",
            line.len()
        ));
    }
    Ok(())
}

/// Checkpoints found and not yet reported: the latest wins.
#[derive(Default)]
struct Coalesce {
    pending: Option<(OpaqueJson, StreamCounters)>,
    last: Option<(OpaqueJson, StreamCounters)>,
    next_at: Option<tokio::time::Instant>,
}

impl Coalesce {
    fn found(&mut self, state: OpaqueJson, counters: StreamCounters) {
        self.pending = Some((state, counters));
    }

    /// The pending checkpoint if one may be reported now (or `now` is forced), unless it
    /// equals the last one reported.
    fn due(&mut self, interval: Duration, force: bool) -> Option<(OpaqueJson, StreamCounters)> {
        let now = tokio::time::Instant::now();
        if !force && self.next_at.is_some_and(|at| now < at) {
            return None;
        }
        let pending = self.pending.take()?;
        if self.last.as_ref() == Some(&pending) {
            return None;
        }
        self.next_at = Some(now + interval);
        self.last = Some(pending.clone());
        Some(pending)
    }

    /// When the pending checkpoint becomes due, if there is one.
    fn wake_at(&self) -> Option<tokio::time::Instant> {
        self.pending
            .as_ref()
            .map(|_| self.next_at.unwrap_or_else(tokio::time::Instant::now))
    }
}

/// Reads the loader's stdout: STATEs become checkpoint events, at most one per
/// `interval` (the latest of those found meanwhile). Returns the last STATE.
pub(crate) async fn checkpoints(
    input: &PipeReader,
    (step, name): (usize, &str),
    ledger: &Mutex<Ledger>,
    events: &Emitter,
    (max_line, max_state, interval): (usize, usize, Duration),
) -> Result<Option<OpaqueJson>, Stop> {
    let mut lines = Lines::new(max_line);
    let mut n = 0u64;
    let mut coalesce = Coalesce::default();
    let mut observe = |line: &[u8], truncated: bool, coalesce: &mut Coalesce| -> Result<(), String> {
        n += 1;
        if truncated {
            return Err(format!("line {n} is longer than {max_line} bytes"));
        }
        let line = line.trim_ascii();
        if line.is_empty() {
            return Ok(());
        }
        too_large(line, n, max_state)?;
        if let Some(value) = loader_state(line, n)? {
            let counters = ledger
                .lock()
                .ack(&value.parsed)
                .ok_or_else(|| format!("line {n}: a loader STATE for records not yet sent: {}", value.parsed))?;
            coalesce.found(value.text, counters);
        }
        Ok(())
    };
    let emit = |checkpoint: Option<(OpaqueJson, StreamCounters)>| async move {
        if let Some((state, counters)) = checkpoint {
            events.emit(ExecEvent::Checkpoint { state, counters }, true).await;
        }
    };
    // `chunk` is cancel-safe (it takes nothing until it returns), so it may race the timer.
    let mut end = false;
    while !end {
        let wake = coalesce.wake_at();
        let chunk = tokio::select! {
            chunk = input.chunk() => chunk,
            () = sleep_until_some(wake) => {
                emit(coalesce.due(interval, false)).await;
                continue;
            }
        };
        let result = match chunk {
            Some(chunk) => lines.feed(&chunk, |l, t| observe(l, t, &mut coalesce)),
            None => {
                end = true;
                lines.finish(|l, t| observe(l, t, &mut coalesce))
            }
        };
        // Checkpoints before a bad line still count: they are durable progress.
        let force = end || result.is_err();
        emit(coalesce.due(interval, force)).await;
        result.map_err(|p| protocol(step, name, p))?;
    }
    Ok(coalesce.last.map(|(state, _)| state))
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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
        ledger.sent(&serde_json::json!({"p": 1}), Arc::new(c(1)));
        ledger.sent(&serde_json::json!({"p": 2}), Arc::new(c(2)));
        ledger.sent(&serde_json::json!({"p": 3}), Arc::new(c(3)));
        assert_eq!(ledger.ack(&serde_json::json!({"p": 2})), Some(c(2)));
        assert_eq!(ledger.ack(&serde_json::json!({"p": 2})), Some(c(2)));
        assert_eq!(ledger.ack(&serde_json::json!({"p": 1})), None);
        assert_eq!(ledger.ack(&serde_json::json!({"p": 9})), None);
        assert_eq!(ledger.ack(&serde_json::json!({"p": 3})), Some(c(3)));
    }

    #[test]
    fn states_match_whatever_their_key_order_and_spacing() {
        let mut ledger = Ledger::default();
        let sent: Value = serde_json::from_str(r#"{"a":{"x":1,"y":[1,2.5,"s",null,true]},"b":-3}"#).unwrap();
        ledger.sent(&sent, Arc::new(StreamCounters::new()));
        let echoed: Value =
            serde_json::from_str(r#"{ "b": -3, "a": { "y": [1, 2.5, "s", null, true], "x": 1 } }"#).unwrap();
        assert!(ledger.ack(&echoed).is_some());
        let other: Value = serde_json::from_str(r#"{"b":-3,"a":{"y":[2.5,1,"s",null,true],"x":1}}"#).unwrap();
        assert!(ledger.ack(&other).is_none(), "array order matters");
    }

    #[test]
    fn pending_states_share_unchanged_counts_and_stay_within_their_byte_budget() {
        let mut ledger = Ledger::default();
        // 10k streams: a snapshot of ~730 KB estimated; shared by every STATE until a
        // count changes, so 500 STATEs with no record in between cost one snapshot.
        let many: StreamCounters = (0..10_000).map(|i| (format!("stream-{i}"), 0)).collect();
        let shared = Arc::new(many.clone());
        for i in 0..500 {
            ledger.sent(&serde_json::json!({"i": i}), Arc::clone(&shared));
        }
        assert_eq!(ledger.sent.len(), 500);
        assert_eq!(ledger.bytes, snapshot_bytes(&many));
        // Fresh snapshots each time: the oldest are forgotten beyond the budget.
        for i in 500..1000 {
            ledger.sent(&serde_json::json!({"i": i}), Arc::new(many.clone()));
        }
        assert!(ledger.bytes <= MAX_PENDING_BYTES, "{}", ledger.bytes);
        assert!(ledger.sent.len() < 500, "{}", ledger.sent.len());
        // A forgotten STATE is believed, with the newest forgotten counts.
        assert_eq!(ledger.ack(&serde_json::json!({"i": 3})), Some(many.clone()));
        assert_eq!(ledger.ack(&serde_json::json!({"i": 999})), Some(many));
        assert_eq!(ledger.bytes, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn checkpoints_are_coalesced_to_one_per_interval_and_repeats_dropped() {
        let interval = Duration::from_secs(1);
        let mut c = Coalesce::default();
        let state = |n: u64| {
            (
                OpaqueJson::from_value(&serde_json::json!({"n": n})),
                StreamCounters::new(),
            )
        };
        assert!(c.due(interval, false).is_none(), "nothing found yet");
        c.found(state(1).0, state(1).1);
        assert_eq!(c.due(interval, false), Some(state(1)), "the first is reported at once");
        c.found(state(2).0, state(2).1);
        c.found(state(3).0, state(3).1);
        assert!(c.due(interval, false).is_none(), "within the interval");
        tokio::time::advance(interval).await;
        assert_eq!(c.due(interval, false), Some(state(3)), "the latest wins");
        c.found(state(3).0, state(3).1);
        assert!(c.due(interval, true).is_none(), "a repeat is dropped, even when forced");
        c.found(state(4).0, state(4).1);
        assert_eq!(c.due(interval, true), Some(state(4)), "forced at the end of the stream");
    }
}
