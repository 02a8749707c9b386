//! Mapping rules. For each record, in this order: `filter` (on input field names),
//! `rename`, `drop`, `keep` (on output names), `set`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use flexcore_plugin_sdk::serde_json::{json, Map, Value};
use flexcore_plugin_sdk::{log, Level, Message};
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
