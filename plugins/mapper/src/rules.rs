//! Mapping rules. For each record, in this order: `filter` (on input field names),
//! `rename`, `drop`, `keep` (on output names), `set`.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;

use flexcore_plugin_sdk::serde_json::value::RawValue;
use flexcore_plugin_sdk::serde_json::{self, json, Map, Value};
use flexcore_plugin_sdk::{log, write_json_str, Level, Message, Output, PluginError, RawRecord};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// The plugin's config (see `config.schema.json`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Rules by stream name; `*` applies to streams without an entry of their own.
    pub streams: BTreeMap<String, StreamRules>,
}

/// What to do with one stream's records.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRules {
    /// Old name → new name.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Fields to remove (output names).
    #[serde(default)]
    pub drop: Vec<String>,
    /// If set, only these fields (output names) are kept.
    #[serde(default)]
    pub keep: Option<Vec<String>>,
    /// Only records matching this pass.
    #[serde(default)]
    pub filter: Option<Filter>,
    /// Fields set to constants (added or overwritten).
    #[serde(default)]
    pub set: Map<String, Value>,
}

/// A condition on one input field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Field name (before renaming).
    pub field: String,
    /// Comparison.
    pub op: Op,
    /// Operand (ignored by `exists`). Numbers and numeric strings compare as numbers.
    #[serde(default)]
    pub value: Value,
}

/// Filter comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Equal (a missing field equals `null`).
    Eq,
    /// Not equal.
    Ne,
    /// Greater than (false when the values do not compare).
    Gt,
    /// Less than (false when the values do not compare).
    Lt,
    /// Present and not null.
    Exists,
}

impl Config {
    /// Maps one message; `None` drops it (a record that fails the filter).
    pub fn apply(&self, message: Message) -> Option<Message> {
        match message {
            Message::Record {
                stream,
                mut record,
                time_extracted,
                version,
            } => {
                if let (Some(rules), Value::Object(fields)) = (self.rules(&stream), &mut record) {
                    if !rules.map_record(fields) {
                        return None;
                    }
                }
                Some(Message::Record {
                    stream,
                    record,
                    time_extracted,
                    version,
                })
            }
            Message::Schema {
                stream,
                mut schema,
                mut key_properties,
                mut bookmark_properties,
            } => {
                if let Some(rules) = self.rules(&stream) {
                    rules.map_schema(&stream, &mut schema, &mut key_properties, bookmark_properties.as_mut());
                }
                Some(Message::Schema {
                    stream,
                    schema,
                    key_properties,
                    bookmark_properties,
                })
            }
            other => Some(other),
        }
    }

    /// Maps one RECORD given as JSON text and writes the result (nothing if the filter
    /// drops it): the same fields in the same order as [`Config::apply`] gives, without a
    /// JSON tree (field values stay text; only a filtered field is parsed).
    pub fn apply_raw<W: Write>(&self, record: &RawRecord<'_>, out: &mut Output<W>) -> Result<(), PluginError> {
        let Some(rules) = self.rules(&record.stream) else {
            return out.write_raw_record(record);
        };
        let RawFields(raw) = serde_json::from_str(record.record.get())
            .map_err(|e| PluginError::msg(format_args!("a record that was checked does not parse: {e}")))?;
        let mut fields: Vec<(Cow<'_, str>, Field<'_>)> = raw.into_iter().map(|(k, v)| (k, Field::Raw(v))).collect();
        if !rules.map_raw(&mut fields) {
            return Ok(());
        }
        out.write_record_with(&record.stream, record.time_extracted.as_deref(), record.version, |w| {
            w.write_all(b"{")?;
            for (i, (name, value)) in fields.iter().enumerate() {
                if i > 0 {
                    w.write_all(b",")?;
                }
                write_json_str(&mut *w, name)?;
                w.write_all(b":")?;
                match value {
                    Field::Raw(raw) => w.write_all(raw.get().as_bytes())?,
                    Field::Set(value) => serde_json::to_writer(&mut *w, value).map_err(std::io::Error::from)?,
                }
            }
            w.write_all(b"}")
        })
    }

    fn rules(&self, stream: &str) -> Option<&StreamRules> {
        self.streams.get(stream).or_else(|| self.streams.get("*"))
    }
}

impl StreamRules {
    /// Maps a record in place; `false` if the filter rejects it.
    pub fn map_record(&self, fields: &mut Map<String, Value>) -> bool {
        if let Some(filter) = &self.filter {
            if !filter.matches(fields.get(&filter.field)) {
                return false;
            }
        }
        self.map_fields(fields);
        for (name, value) in &self.set {
            fields.insert(name.clone(), value.clone());
        }
        true
    }

    /// [`StreamRules::map_record`] on fields kept as text, with the same map semantics
    /// (an existing name is replaced in place, a new one appended, a removal moves the
    /// last field into the gap), so the fields come out in the same order.
    fn map_raw<'a>(&'a self, fields: &mut Vec<(Cow<'a, str>, Field<'a>)>) -> bool {
        fn position(fields: &[(Cow<'_, str>, Field<'_>)], name: &str) -> Option<usize> {
            fields.iter().position(|(n, _)| n == name)
        }
        fn insert<'a>(fields: &mut Vec<(Cow<'a, str>, Field<'a>)>, name: Cow<'a, str>, value: Field<'a>) {
            match position(fields, &name) {
                Some(i) => fields[i].1 = value,
                None => fields.push((name, value)),
            }
        }
        if let Some(filter) = &self.filter {
            let value = match position(fields, &filter.field).map(|i| &fields[i].1) {
                Some(Field::Raw(raw)) => serde_json::from_str::<Value>(raw.get()).ok(),
                Some(Field::Set(value)) => Some((*value).clone()),
                None => None,
            };
            if !filter.matches(value.as_ref()) {
                return false;
            }
        }
        for (old, new) in &self.rename {
            if let Some(i) = position(fields, old) {
                let (_, value) = fields.swap_remove(i);
                insert(fields, Cow::Borrowed(new.as_str()), value);
            }
        }
        for name in &self.drop {
            if let Some(i) = position(fields, name) {
                fields.swap_remove(i);
            }
        }
        if let Some(keep) = &self.keep {
            fields.retain(|(name, _)| keep.iter().any(|k| k == name));
        }
        for (name, value) in &self.set {
            insert(fields, Cow::Borrowed(name.as_str()), Field::Set(value));
        }
        true
    }

    /// Rename, drop and keep on any name → value map (record fields or schema properties).
    fn map_fields(&self, fields: &mut Map<String, Value>) {
        for (old, new) in &self.rename {
            if let Some(value) = fields.remove(old) {
                fields.insert(new.clone(), value);
            }
        }
        for name in &self.drop {
            fields.remove(name);
        }
        if let Some(keep) = &self.keep {
            fields.retain(|name, _| keep.contains(name));
        }
    }

    /// The output name of `name`, or `None` if the field is removed.
    fn output_name<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        let out = self.rename.get(name).map_or(name, String::as_str);
        let kept = self.keep.as_ref().is_none_or(|keep| keep.iter().any(|k| k == out));
        (kept && !self.drop.iter().any(|d| d == out)).then_some(out)
    }

    fn map_names(&self, stream: &str, what: &str, names: &mut Vec<String>) {
        let before = std::mem::take(names);
        for name in before {
            match self.output_name(&name) {
                Some(out) => names.push(out.to_owned()),
                None => log(
                    Level::Warning,
                    format_args!("stream {stream}: {what} {name:?} is removed by the mapping"),
                ),
            }
        }
    }

    /// Rewrites a SCHEMA to describe mapped records.
    pub fn map_schema(
        &self,
        stream: &str,
        schema: &mut Value,
        key_properties: &mut Vec<String>,
        bookmark_properties: Option<&mut Vec<String>>,
    ) {
        if let Some(Value::Object(properties)) = schema.get_mut("properties") {
            self.map_fields(properties);
            for (name, value) in &self.set {
                properties.insert(name.clone(), json!({"type": json_type(value)}));
            }
        }
        if let Some(Value::Array(required)) = schema.get_mut("required") {
            let mapped: Vec<Value> = required
                .iter()
                .filter_map(Value::as_str)
                .filter_map(|name| self.output_name(name))
                .map(|n| json!(n))
                .collect();
            *required = mapped;
        }
        self.map_names(stream, "key property", key_properties);
        if let Some(bookmarks) = bookmark_properties {
            self.map_names(stream, "bookmark property", bookmarks);
        }
    }
}

/// A record field's value in [`Config::apply_raw`]: the text it came as, or a `set` constant.
enum Field<'a> {
    Raw(&'a RawValue),
    Set(&'a Value),
}

/// A JSON object's fields as text, in order; a repeated name keeps its first place and
/// its last value (as a parsed object would).
struct RawFields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// An object key, borrowed from the text unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for RawFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((Key(name), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    match fields.iter_mut().find(|(n, _)| *n == name) {
                        Some(field) => field.1 = value,
                        None => fields.push((name, value)),
                    }
                }
                Ok(RawFields(fields))
            }
        }
        deserializer.deserialize_map(V)
    }
}

impl Filter {
    fn matches(&self, field: Option<&Value>) -> bool {
        let field = field.unwrap_or(&Value::Null);
        match self.op {
            Op::Eq => equal(field, &self.value),
            Op::Ne => !equal(field, &self.value),
            Op::Gt => compare(field, &self.value) == Some(Ordering::Greater),
            Op::Lt => compare(field, &self.value) == Some(Ordering::Less),
            Op::Exists => !field.is_null(),
        }
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    a == b || compare(a, b) == Some(Ordering::Equal)
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// Numbers (and numeric strings) numerically, strings lexically, anything else not at all.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return x.partial_cmp(&y);
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flexcore_plugin_sdk::serde_json;

    fn config(rules: Value) -> Config {
        serde_json::from_value(json!({ "streams": rules })).unwrap()
    }

    #[test]
    fn maps_records_in_order() {
        let c = config(json!({"s": {
            "filter": {"field": "n", "op": "gt", "value": 5},
            "rename": {"n": "count", "a": "b"}, "drop": ["secret"], "set": {"src": "x"}}}));
        let out = c
            .apply(Message::record("s", json!({"n": "7", "a": 1, "secret": 2})))
            .unwrap();
        assert_eq!(out, Message::record("s", json!({"count": "7", "b": 1, "src": "x"})));
        assert!(c.apply(Message::record("s", json!({"n": 5}))).is_none());
        assert!(c.apply(Message::record("s", json!({}))).is_none());
        // Other streams and other messages are untouched.
        let other = Message::record("t", json!({"n": 1}));
        assert_eq!(c.apply(other.clone()), Some(other));
        let state = Message::state(json!({"x": 1}));
        assert_eq!(c.apply(state.clone()), Some(state));
    }

    /// Runs `line` through both paths; both must write the same fields in the same order.
    fn both(c: &Config, line: &str) -> (String, String) {
        use flexcore_plugin_sdk::{parse_raw, Parsed};
        let Parsed::Record(raw) = parse_raw(line).unwrap() else {
            panic!("not a record")
        };
        let mut fast = Output::new(Vec::new());
        c.apply_raw(&raw, &mut fast).unwrap();
        let mut slow = Output::new(Vec::new());
        if let Some(m) = c.apply(Message::parse_line(line).unwrap()) {
            slow.write(&m).unwrap();
        }
        let text = |o: Output<Vec<u8>>| String::from_utf8(o.into_inner().unwrap()).unwrap();
        (text(fast), text(slow))
    }

    #[test]
    fn raw_records_map_like_parsed_ones() {
        let c = config(json!({"s": {
            "filter": {"field": "n", "op": "gt", "value": 5},
            "rename": {"n": "count", "a": "b", "z": "a"}, "drop": ["secret"], "set": {"src": "x", "b": [1]}},
            "t": {"keep": ["k", "j"], "rename": {"i": "k"}}}));
        for line in [
            r#"{"type":"RECORD","stream":"s","record":{"n":"7","a":1,"secret":2,"z":{"deep":[1,2]},"q":null}}"#,
            r#"{"type":"RECORD","stream":"s","record":{"secret":0,"n":9,"n":6,"x\"y":"v"},"version":2}"#,
            r#"{"type":"RECORD","stream":"s","record":{"n":5}}"#,
            r#"{"type":"RECORD","stream":"s","record":{}}"#,
            r#"{"type":"RECORD","stream":"t","record":{"j":1,"i":2,"k":3,"l":4},"time_extracted":"t"}"#,
            r#"{"type":"RECORD","stream":"u","record":{"j":1}}"#,
        ] {
            let (fast, slow) = both(&c, line);
            assert_eq!(fast, slow, "{line}");
        }
    }

    #[test]
    fn filter_ops() {
        let f = |op: &str, value: Value, field: Option<Value>| {
            let filter: Filter = serde_json::from_value(json!({"field": "f", "op": op, "value": value})).unwrap();
            filter.matches(field.as_ref())
        };
        assert!(f("eq", json!(10), Some(json!("10"))));
        assert!(f("eq", json!(null), None));
        assert!(f("ne", json!("a"), Some(json!("b"))));
        assert!(f("lt", json!("b"), Some(json!("a"))));
        assert!(!f("gt", json!(1), Some(json!("abc"))));
        assert!(f("exists", json!(null), Some(json!(0))));
        assert!(!f("exists", json!(null), Some(json!(null))));
    }

    #[test]
    fn star_rules_and_schema() {
        let c = config(json!({"*": {"rename": {"id": "key"}, "keep": ["key", "name"], "set": {"v": 1}}}));
        let schema = Message::Schema {
            stream: "s".into(),
            schema: json!({"type": "object", "required": ["id", "other"],
                "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "other": {}}}),
            key_properties: vec!["id".into(), "other".into()],
            bookmark_properties: Some(vec!["name".into()]),
        };
        let Some(Message::Schema {
            schema,
            key_properties,
            bookmark_properties,
            ..
        }) = c.apply(schema)
        else {
            panic!("not a schema")
        };
        assert_eq!(
            schema,
            json!({"type": "object", "required": ["key"], "properties": {
                "key": {"type": "integer"}, "name": {"type": "string"}, "v": {"type": "integer"}}})
        );
        assert_eq!(key_properties, ["key"]);
        assert_eq!(bookmark_properties, Some(vec!["name".to_owned()]));
        let out = c
            .apply(Message::record("any", json!({"id": 1, "name": "n", "other": 3})))
            .unwrap();
        assert_eq!(out, Message::record("any", json!({"key": 1, "name": "n", "v": 1})));
    }
}
