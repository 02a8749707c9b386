//! Mutations of a valid body, seeded. Value-level mutations keep the body JSON, so a
//! standard validator can judge it: a field dropped, added, set to null or to a value of
//! another type; numbers at and around every bound the schema states and the machine
//! limits (2^31, 2^53, 2^63, 2^64, `1.0`, `-0`); strings empty, at and past their length
//! limits in multi-byte characters, with U+0000, controls and non-ASCII text; UUIDs and
//! timestamps spelt almost right; crons and time zones good and bad; objects and arrays
//! swapped; nested garbage; a field of another valid body. Byte-level mutations may
//! break the JSON: truncation, invalid UTF-8, lone surrogates, repeated keys, nesting
//! past any parser's limit, numbers out of a double's range, other spellings of the same
//! number, a byte-order mark, trailing garbage, bodies near the size limit.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::{json, Map, Number, Value};

use super::hostile::{
    around, garbage, machine_numbers, spellings, string_of, timestamp_variants, uuid_variants, CRONS, HOSTILE, KEYS,
    NOT_NUMBERS, ZONES,
};
use super::tree::{at, at_mut, describe, hints, paths, write, Hints, Seg, Spell};

/// A mutated body and what was done to it.
#[derive(Debug, Clone)]
pub struct Mutant {
    /// The bytes to send.
    pub bytes: Vec<u8>,
    /// What was done (for failure messages and tallies).
    pub how: String,
}

/// Mutates valid bodies of one request schema.
pub struct Mutator<'a> {
    rng: &'a mut StdRng,
    schema: &'a Value,
    /// Largest body worth sending (a body near it is generated now and then).
    max_bytes: usize,
}

impl<'a> Mutator<'a> {
    /// Mutations of bodies of `schema` (the request's schema file), bodies near
    /// `max_bytes` included.
    pub fn new(rng: &'a mut StdRng, schema: &'a Value, max_bytes: usize) -> Self {
        Self { rng, schema, max_bytes }
    }

    /// A mutation of `body`: byte-level with probability `raw_share`, else one to three
    /// value-level ones (with `donor`, another valid body, to borrow from).
    pub fn mutate(&mut self, body: &Value, donor: &Value, raw_share: f64) -> Mutant {
        if self.rng.random_bool(raw_share) {
            return self.raw(body);
        }
        let mut body = body.clone();
        let mut how = Vec::new();
        for _ in 0..self.rng.random_range(1..=3) {
            how.push(self.value(&mut body, donor));
        }
        Mutant {
            bytes: write(&body, &Spell::Compact).into_bytes(),
            how: how.join("; "),
        }
    }

    /// One of `items`, drawn from the seed.
    fn choose<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        items.choose(self.rng).cloned()
    }

    /// One value-level mutation of `body`; says what it did.
    fn value(&mut self, body: &mut Value, donor: &Value) -> String {
        let all = paths(body);
        // The body itself now and then; mostly a field or something inside one.
        let inner = if all.len() > 1 && self.rng.random_bool(0.9) {
            &all[1..]
        } else {
            &all[..]
        };
        let Some(path) = self.choose(inner) else {
            return "nothing".into();
        };
        let objects: Vec<Vec<Seg>> = all
            .iter()
            .filter(|p| at(body, p).is_some_and(Value::is_object))
            .cloned()
            .collect();
        let hints = hints(self.schema, &path);
        let current = at(body, &path).cloned().unwrap_or(Value::Null);
        let (new, what): (Value, String) = match self.rng.random_range(0..14) {
            0 | 1 => {
                let Some(object) = self.choose(&objects) else {
                    return "nothing".into();
                };
                let keys: Vec<String> = at(body, &object)
                    .and_then(Value::as_object)
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                let Some(key) = self.choose(&keys) else {
                    return "nothing".into();
                };
                if let Some(map) = at_mut(body, &object).and_then(Value::as_object_mut) {
                    map.shift_remove(&key);
                }
                let mut gone = object;
                gone.push(Seg::Key(key));
                return format!("dropped {}", describe(&gone));
            }
            2 => {
                let Some(object) = self.choose(&objects) else {
                    return "nothing".into();
                };
                let key = if self.rng.random_bool(0.7) {
                    (*KEYS.choose(self.rng).unwrap_or(&"x")).to_owned()
                } else {
                    format!("f{}", self.rng.random::<u16>())
                };
                let value = self.interesting(&current);
                if let Some(map) = at_mut(body, &object).and_then(Value::as_object_mut) {
                    map.insert(key.clone(), value);
                }
                let mut added = object;
                added.push(Seg::Key(key));
                return format!("added {}", describe(&added));
            }
            3 | 4 => (self.interesting(&current), "replaced".into()),
            5 | 6 => self.boundary(&hints, &current),
            7 => (retype(&current), "retyped".into()),
            8 => (self.tweak_string(&current), "string tweak".into()),
            9 => {
                let pool = if self.rng.random_bool(0.5) { CRONS } else { ZONES };
                (json!(self.choose(pool).unwrap_or_default()), "cron/zone".into())
            }
            10 => (self.tweak_array(&current, &hints), "array tweak".into()),
            11 => {
                let depth = self.rng.random_range(1..40);
                (garbage(self.rng, depth), format!("garbage of depth {depth}"))
            }
            12 => {
                let donors = paths(donor);
                let node = self.choose(&donors).and_then(|p| at(donor, &p).cloned());
                (node.unwrap_or(Value::Null), "borrowed".into())
            }
            _ => (Value::Null, "null".into()),
        };
        match at_mut(body, &path) {
            Some(slot) => *slot = new,
            None => return "nothing".into(),
        }
        format!("{what} {}", describe(&path))
    }

    /// A value of any type that breaks some rule somewhere.
    fn interesting(&mut self, current: &Value) -> Value {
        match self.rng.random_range(0..8) {
            0 | 1 => self.choose(&machine_numbers()).unwrap_or_default(),
            2 | 3 => json!(self.choose(HOSTILE).unwrap_or_default()),
            4 => self.tweak_string(current),
            5 => json!([]),
            6 => json!({}),
            _ => json!(self.rng.random::<bool>()),
        }
    }

    /// A value at or just past a bound the schema states for this node.
    fn boundary(&mut self, hints: &Hints, current: &Value) -> (Value, String) {
        let wide = self.rng.random_bool(0.5);
        let mut candidates: Vec<Value> = hints.numbers.iter().flat_map(around).collect();
        for n in &hints.lengths {
            for m in [n.saturating_sub(1), *n, n + 1] {
                candidates.push(json!(string_of(m, wide)));
            }
        }
        for n in hints.items.iter().chain(&hints.properties) {
            let item = current
                .as_array()
                .and_then(|a| a.first())
                .cloned()
                .unwrap_or_else(|| json!("2026-01-01T00:00:00Z"));
            for m in [n.saturating_sub(1), *n, n + 1] {
                let m = usize::try_from(m).unwrap_or(0).min(20_000);
                if hints.properties.contains(n) {
                    let map: Map<String, Value> = (0..m).map(|i| (format!("s{i}"), json!(i))).collect();
                    candidates.push(Value::Object(map));
                } else {
                    candidates.push(Value::Array(vec![item.clone(); m]));
                }
            }
        }
        for value in &hints.enums {
            candidates.push(value.clone());
            if let Some(s) = value.as_str() {
                candidates.push(json!(s.to_uppercase()));
                candidates.push(json!(format!("{s} ")));
            }
        }
        if candidates.is_empty() {
            candidates = machine_numbers();
        }
        let value = self.choose(&candidates).unwrap_or_default();
        (value, "boundary".into())
    }

    /// A near miss of the string `current` (or a hostile string).
    fn tweak_string(&mut self, current: &Value) -> Value {
        let Some(s) = current.as_str() else {
            return json!(self.choose(HOSTILE).unwrap_or_default());
        };
        let looks_like_uuid = s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4;
        let looks_like_time = s.len() >= 20 && s.as_bytes().get(4) == Some(&b'-') && s.contains(':');
        let mut options = vec![
            format!(" {s}"),
            format!("{s} "),
            s.to_uppercase(),
            s.chars().rev().collect(),
            format!("{s}\u{0}"),
            format!("{s}é"),
            s.chars().skip(1).collect(),
            s.repeat(2),
        ];
        if looks_like_uuid {
            options.extend(uuid_variants(s));
        }
        if looks_like_time {
            options.extend(timestamp_variants(s));
        }
        json!(self.choose(&options).unwrap_or_default())
    }

    /// An array emptied, shortened, grown past its bound, with a repeated item, or a value
    /// wrapped in an array.
    fn tweak_array(&mut self, current: &Value, hints: &Hints) -> Value {
        let Some(items) = current.as_array() else {
            return json!([current]);
        };
        let mut items = items.clone();
        match self.rng.random_range(0..4) {
            0 => items.clear(),
            1 => {
                items.pop();
            }
            2 => {
                if let Some(first) = items.first().cloned() {
                    items.push(first);
                }
            }
            _ => {
                let target = hints.items.iter().copied().max().unwrap_or(40) + 1;
                let target = usize::try_from(target).unwrap_or(40).min(20_000);
                let fill = items.first().cloned().unwrap_or(Value::Null);
                items.resize(target, fill);
            }
        }
        Value::Array(items)
    }

    /// A byte-level mutation of `body`.
    fn raw(&mut self, body: &Value) -> Mutant {
        let all = paths(body);
        let path = self.choose(&all).unwrap_or_default();
        let text = body.to_string();
        let (bytes, how): (Vec<u8>, String) = match self.rng.random_range(0..16) {
            0 => (Vec::new(), "empty".into()),
            1 => (b" \n\t ".to_vec(), "whitespace".into()),
            2 => {
                let cut = self.rng.random_range(0..text.len().max(1));
                (text.as_bytes()[..cut].to_vec(), format!("truncated at {cut}"))
            }
            3 => {
                let bad: &[&[u8]] = &[
                    b"\xff",
                    b"\xc3\x28",
                    b"\x80",
                    b"\xed\xa0\x80",
                    b"\xc0\xaf",
                    b"\xf4\x90\x80\x80",
                ];
                let inserted = self.choose(bad).unwrap_or_default();
                let quotes: Vec<usize> = text.match_indices('"').map(|(i, _)| i + 1).collect();
                let at = self.choose(&quotes).unwrap_or(0);
                let mut bytes = text.as_bytes()[..at].to_vec();
                bytes.extend_from_slice(inserted);
                bytes.extend_from_slice(&text.as_bytes()[at..]);
                (bytes, "invalid UTF-8".into())
            }
            4 | 5 => {
                let objects: Vec<Vec<Seg>> = all
                    .iter()
                    .filter(|p| at(body, p).and_then(Value::as_object).is_some_and(|m| !m.is_empty()))
                    .cloned()
                    .collect();
                let object = self.choose(&objects).unwrap_or_default();
                let first = at(body, &object)
                    .and_then(Value::as_object)
                    .and_then(|m| m.values().next().cloned());
                let again = match first {
                    Some(v) if self.rng.random_bool(0.5) => v,
                    _ => self.interesting(&Value::Null),
                };
                let text = write(body, &Spell::Duplicate(object.clone(), again));
                (text.into_bytes(), format!("repeated key in {}", describe(&object)))
            }
            6 => {
                let depth = *[64usize, 127, 128, 129, 1000, 100_000].choose(self.rng).unwrap_or(&128);
                let nested = "[".repeat(depth) + &"]".repeat(depth);
                let text = write(body, &Spell::Raw(path.clone(), nested));
                (
                    text.into_bytes(),
                    format!("nesting {depth} deep at {}", describe(&path)),
                )
            }
            7 => {
                let text = text.replacen("\":\"", "\":\"\\ud800", 1);
                (text.into_bytes(), "lone surrogate".into())
            }
            8 | 9 => {
                let numbers: Vec<Vec<Seg>> = all
                    .iter()
                    .filter(|p| at(body, p).is_some_and(Value::is_number))
                    .cloned()
                    .collect();
                let Some(at_path) = self.choose(&numbers) else {
                    return self.raw(&json!({"n": 1}));
                };
                let Some(Value::Number(n)) = at(body, &at_path) else {
                    return self.raw(&json!({"n": 1}));
                };
                let spelling = self.choose(&spellings(n)).unwrap_or_default();
                let text = write(body, &Spell::Raw(at_path.clone(), spelling.clone()));
                (text.into_bytes(), format!("{} spelt {spelling}", describe(&at_path)))
            }
            10 => {
                let token = self.choose(NOT_NUMBERS).unwrap_or_default();
                let text = write(body, &Spell::Raw(path.clone(), token.to_owned()));
                (text.into_bytes(), format!("{token} at {}", describe(&path)))
            }
            11 => {
                let forms = [
                    format!("\u{feff}{text}"),
                    format!("{text} x"),
                    format!("{text}{text}"),
                    format!("/* c */{text}"),
                    text.replacen('}', ",}", 1),
                    text.replace('"', "'"),
                    format!(" \r\n{text}\n "),
                ];
                let form = self.choose(&forms).unwrap_or_default();
                (form.into_bytes(), "not quite JSON".into())
            }
            12 => {
                let forms = [
                    format!("[{text}]"),
                    "\"body\"".into(),
                    "42".into(),
                    "null".into(),
                    "true".into(),
                ];
                let form = self.choose(&forms).unwrap_or_default();
                (form.into_bytes(), "not an object".into())
            }
            13 => {
                let pretty = serde_json::to_string_pretty(body).unwrap_or_default();
                (pretty.into_bytes(), "pretty-printed".into())
            }
            _ => self.huge(body),
        };
        Mutant { bytes, how }
    }

    /// `body` grown to about `max_bytes` by one long string (in a field it has, or a new one).
    fn huge(&mut self, body: &Value) -> (Vec<u8>, String) {
        let mut body = body.clone();
        let strings: Vec<Vec<Seg>> = paths(&body)
            .into_iter()
            .filter(|p| at(&body, p).is_some_and(Value::is_string))
            .collect();
        let path = match self.choose(&strings) {
            Some(p) => p,
            None => vec![Seg::Key("description".into())],
        };
        let base = body.to_string().len();
        let slack = self.rng.random_range(0..2048);
        let len = self.max_bytes.saturating_sub(base + slack).max(1);
        let wide = self.rng.random_bool(0.3);
        let filler = if wide { "é".repeat(len / 2) } else { "a".repeat(len) };
        if let Some(slot) = at_mut(&mut body, &path) {
            *slot = json!(filler);
        } else if let Some(map) = body.as_object_mut() {
            map.insert("description".into(), json!(filler));
        }
        let text = body.to_string();
        let size = text.len();
        (text.into_bytes(), format!("{size} bytes via {}", describe(&path)))
    }
}

/// `v` as another JSON type: an object as the array of its values, an array as an
/// object, a number as a string, a string as a number, …
fn retype(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Array(map.values().cloned().collect()),
        Value::Array(items) => Value::Object(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| (i.to_string(), item.clone()))
                .collect(),
        ),
        Value::Number(n) => json!(n.to_string()),
        Value::String(s) => s
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or(json!(s.len()), Value::Number),
        Value::Bool(b) => json!(b.to_string()),
        Value::Null => json!({}),
    }
}
