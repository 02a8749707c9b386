//! Incremental replication: comparing replication-key values and building the STATE
//! `{"bookmarks": {"<stream>": {"replication_key": …, "replication_key_value": …}}}`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use flexcore_plugin_sdk::serde_json::{json, Map, Value};
use flexcore_plugin_sdk::{log, Level};

/// Orders two replication-key values: numerically when both read as numbers (JSON
/// numbers or numeric strings), otherwise as strings.
pub fn compare(a: &Value, b: &Value) -> Ordering {
    if let (Some(x), Some(y)) = (as_int(a), as_int(b)) {
        return x.cmp(&y);
    }
    if let (Some(x), Some(y)) = (as_float(a), as_float(b)) {
        return x.partial_cmp(&y).unwrap_or(Ordering::Equal);
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => text(a).cmp(&text(b)),
    }
}

fn as_int(v: &Value) -> Option<i128> {
    match v {
        Value::Number(n) => n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether a key value counts as absent (such rows are only read on a full sync).
pub fn is_absent(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    }
}

/// Progress of one stream's replication key during a run.
#[derive(Debug)]
pub struct StreamProgress {
    /// The bookmark the run started from: only rows above it are read.
    pub start: Option<Value>,
    /// Largest key value emitted so far.
    max: Option<Value>,
    /// Largest value all of whose rows have been emitted (the previous distinct `max`),
    /// valid while the rows arrive in key order.
    complete: Option<Value>,
    /// Rows have arrived in non-decreasing key order so far.
    sorted: bool,
}

impl StreamProgress {
    /// Whether a row with key value `v` is new since the start bookmark.
    pub fn wants(&self, v: Option<&Value>) -> bool {
        match (&self.start, v) {
            (None, _) => true,
            (Some(_), v) if is_absent(v) => false,
            (Some(start), Some(v)) => compare(v, start) == Ordering::Greater,
            (Some(_), None) => false,
        }
    }

    /// Notes that a row with key value `v` was emitted.
    pub fn saw(&mut self, v: Option<&Value>) {
        let Some(v) = v.filter(|v| !is_absent(Some(v))) else {
            return;
        };
        match &self.max {
            None => self.max = Some(v.clone()),
            Some(max) => match compare(v, max) {
                Ordering::Greater => self.complete = self.max.replace(v.clone()),
                Ordering::Less => self.sorted = false,
                Ordering::Equal => {}
            },
        }
    }

    /// The bookmark safe to store now (mid-run: a resume must not skip rows still to
    /// come, so only values whose rows are all emitted count, and only if rows are sorted).
    fn checkpoint(&self, finished: bool) -> Option<&Value> {
        let reached = if finished {
            self.max.as_ref()
        } else if self.sorted {
            self.complete.as_ref()
        } else {
            None
        };
        match (reached, &self.start) {
            (Some(r), Some(s)) if compare(r, s) != Ordering::Greater => Some(s),
            (Some(r), _) => Some(r),
            (None, s) => s.as_ref(),
        }
    }
}

/// The run's STATE: the incoming state, with the bookmarks of the streams read here
/// replaced (other streams' bookmarks are kept).
#[derive(Debug)]
pub struct Bookmarks {
    base: Map<String, Value>,
    replication_key: Option<String>,
    streams: BTreeMap<String, StreamProgress>,
}

impl Bookmarks {
    /// Starts from the `--state` value (if any) for `replication_key`.
    pub fn new(state: Option<Value>, replication_key: Option<String>) -> Bookmarks {
        let base = match state {
            Some(Value::Object(map)) => map,
            Some(other) => {
                log(
                    Level::Warning,
                    format_args!("ignoring state that is not an object: {other}"),
                );
                Map::new()
            }
            None => Map::new(),
        };
        Bookmarks {
            base,
            replication_key,
            streams: BTreeMap::new(),
        }
    }

    /// The progress of `stream`, created from its stored bookmark on first use.
    pub fn stream(&mut self, stream: &str) -> &mut StreamProgress {
        let key = self.replication_key.as_deref();
        let base = &self.base;
        self.streams.entry(stream.to_owned()).or_insert_with(|| {
            let stored = base.get("bookmarks").and_then(|b| b.get(stream));
            let start = match (stored, key) {
                (Some(b), Some(key)) if b.get("replication_key").and_then(Value::as_str) == Some(key) => {
                    b.get("replication_key_value").filter(|v| !v.is_null()).cloned()
                }
                (Some(_), Some(key)) => {
                    log(
                        Level::Warning,
                        format_args!("stream {stream}: stored bookmark is not for {key}; full sync"),
                    );
                    None
                }
                _ => None,
            };
            StreamProgress {
                start,
                max: None,
                complete: None,
                sorted: true,
            }
        })
    }

    /// The STATE value to emit (`finished`: the run has read everything).
    pub fn state(&self, finished: bool) -> Value {
        let mut state = self.base.clone();
        let Some(key) = &self.replication_key else {
            return Value::Object(state);
        };
        let bookmarks = state.entry("bookmarks").or_insert_with(|| json!({}));
        if !bookmarks.is_object() {
            *bookmarks = json!({});
        }
        if let Value::Object(bookmarks) = bookmarks {
            for (stream, progress) in &self.streams {
                if let Some(value) = progress.checkpoint(finished) {
                    bookmarks.insert(
                        stream.clone(),
                        json!({"replication_key": key, "replication_key_value": value}),
                    );
                }
            }
        }
        Value::Object(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_numbers_numerically_and_others_as_strings() {
        assert_eq!(compare(&json!("10"), &json!("9")), Ordering::Greater);
        assert_eq!(compare(&json!(10), &json!("9.5")), Ordering::Greater);
        assert_eq!(compare(&json!("2026-01-02"), &json!("2026-01-10")), Ordering::Less);
        assert_eq!(compare(&json!("b"), &json!("10")), Ordering::Greater);
    }

    #[test]
    fn mid_run_checkpoints_never_skip_rows() {
        let mut b = Bookmarks::new(None, Some("k".into()));
        let s = b.stream("s");
        for v in [1, 2, 2] {
            s.saw(Some(&json!(v)));
        }
        // More rows with k=2 may follow, so only 1 is complete.
        assert_eq!(b.state(false)["bookmarks"]["s"]["replication_key_value"], json!(1));
        assert_eq!(b.state(true)["bookmarks"]["s"]["replication_key_value"], json!(2));
        b.stream("s").saw(Some(&json!(0)));
        // Out of order: nothing but the start bookmark (none here) is safe mid-run.
        assert!(b.state(false)["bookmarks"].get("s").is_none());
    }

    #[test]
    fn keeps_other_streams_and_filters_by_start() {
        let state = json!({"bookmarks": {
            "s": {"replication_key": "k", "replication_key_value": "5"},
            "t": {"replication_key": "k", "replication_key_value": 1}}});
        let mut b = Bookmarks::new(Some(state), Some("k".into()));
        let s = b.stream("s");
        assert!(!s.wants(Some(&json!("5"))));
        assert!(s.wants(Some(&json!("06"))));
        assert!(!s.wants(None));
        let out = b.state(true);
        assert_eq!(out["bookmarks"]["s"]["replication_key_value"], json!("5"));
        assert_eq!(out["bookmarks"]["t"]["replication_key_value"], json!(1));
    }
}
