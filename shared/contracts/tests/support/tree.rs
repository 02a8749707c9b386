//! A JSON body as a tree of nodes: every node by its path, what its schema says of it
//! (bounds, lengths, enums, through `$ref`s and combinators), and the body written out
//! with one node spelt otherwise (another number spelling, raw text, a repeated key).

use serde_json::{Number, Value};

/// One step into a JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Every node of `v` (the root first) by its path.
pub fn paths(v: &Value) -> Vec<Vec<Seg>> {
    fn walk(v: &Value, path: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
        out.push(path.clone());
        match v {
            Value::Object(map) => {
                for (k, item) in map {
                    path.push(Seg::Key(k.clone()));
                    walk(item, path, out);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    walk(item, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// The node at `path`, to change.
pub fn at_mut<'v>(v: &'v mut Value, path: &[Seg]) -> Option<&'v mut Value> {
    path.iter().try_fold(v, |v, seg| match seg {
        Seg::Key(k) => v.get_mut(k.as_str()),
        Seg::Index(i) => v.get_mut(*i),
    })
}

/// The node at `path`.
pub fn at<'v>(v: &'v Value, path: &[Seg]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, seg| match seg {
        Seg::Key(k) => v.get(k.as_str()),
        Seg::Index(i) => v.get(*i),
    })
}

/// `path` as a person reads it (`/steps/0/plugin`, `the body`).
pub fn describe(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => out.push_str(&format!("/{k}")),
            Seg::Index(i) => out.push_str(&format!("/{i}")),
        }
    }
    if out.is_empty() {
        "the body".into()
    } else {
        out
    }
}

/// The rules the schema states for the node at `path` (every branch that may apply).
#[derive(Debug, Default)]
pub struct Hints {
    /// `minimum`, `maximum` and their exclusive forms.
    pub numbers: Vec<Number>,
    /// `minLength`, `maxLength`.
    pub lengths: Vec<u64>,
    /// `minItems`, `maxItems`.
    pub items: Vec<u64>,
    /// `maxProperties`.
    pub properties: Vec<u64>,
    /// `enum` values and `const`.
    pub enums: Vec<Value>,
}

/// The subschemas that may apply to the node at `path` of an instance of `root`.
pub fn subschemas<'s>(root: &'s Value, path: &[Seg]) -> Vec<&'s Value> {
    fn expand<'s>(root: &'s Value, schema: &'s Value, out: &mut Vec<&'s Value>, depth: u32) {
        if depth > 16 {
            return;
        }
        let target = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|p| root.pointer(p));
        if let Some(target) = target {
            expand(root, target, out, depth + 1);
        }
        out.push(schema);
        for key in ["allOf", "anyOf", "oneOf"] {
            for sub in schema.get(key).and_then(Value::as_array).into_iter().flatten() {
                expand(root, sub, out, depth + 1);
            }
        }
        for key in ["then", "else"] {
            if let Some(sub) = schema.get(key) {
                expand(root, sub, out, depth + 1);
            }
        }
    }
    let mut current = Vec::new();
    expand(root, root, &mut current, 0);
    for seg in path {
        let mut next = Vec::new();
        for schema in &current {
            let sub = match seg {
                Seg::Key(k) => schema
                    .get("properties")
                    .and_then(|p| p.get(k.as_str()))
                    .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object())),
                Seg::Index(_) => schema.get("items").filter(|i| i.is_object()),
            };
            if let Some(sub) = sub {
                expand(root, sub, &mut next, 0);
            }
        }
        current = next;
    }
    current
}

/// What the schema `root` says of the node at `path`: every bound any branch states.
pub fn hints(root: &Value, path: &[Seg]) -> Hints {
    let mut hints = Hints::default();
    for schema in subschemas(root, path) {
        let take = |key: &str, into: &mut Vec<u64>| {
            if let Some(n) = schema.get(key).and_then(Value::as_u64) {
                into.push(n);
            }
        };
        take("minLength", &mut hints.lengths);
        take("maxLength", &mut hints.lengths);
        take("minItems", &mut hints.items);
        take("maxItems", &mut hints.items);
        take("maxProperties", &mut hints.properties);
        for key in ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"] {
            if let Some(Value::Number(n)) = schema.get(key) {
                hints.numbers.push(n.clone());
            }
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            hints.enums.extend(values.iter().cloned());
        }
        if let Some(value) = schema.get("const") {
            hints.enums.push(value.clone());
        }
    }
    hints
}

/// How a body is written out.
pub enum Spell {
    /// `serde_json`'s compact form.
    Compact,
    /// The node at the path written as this text instead.
    Raw(Vec<Seg>, String),
    /// The object at the path gets its first key again, with this value.
    Duplicate(Vec<Seg>, Value),
}

/// Writes `v` as JSON text, spelt as `spell` says.
pub fn write(v: &Value, spell: &Spell) -> String {
    fn go(out: &mut String, v: &Value, path: &mut Vec<Seg>, spell: &Spell) {
        if let Spell::Raw(at, text) = spell {
            if at == path {
                out.push_str(text);
                return;
            }
        }
        match v {
            Value::Object(map) => {
                out.push('{');
                for (i, (k, item)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    path.push(Seg::Key(k.clone()));
                    go(out, item, path, spell);
                    path.pop();
                }
                if let (Spell::Duplicate(at, again), Some(first)) = (spell, map.keys().next()) {
                    if at == path {
                        out.push(',');
                        out.push_str(&Value::String(first.clone()).to_string());
                        out.push(':');
                        out.push_str(&again.to_string());
                    }
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    path.push(Seg::Index(i));
                    go(out, item, path, spell);
                    path.pop();
                }
                out.push(']');
            }
            leaf => out.push_str(&leaf.to_string()),
        }
    }
    let mut out = String::new();
    if matches!(spell, Spell::Compact) {
        return v.to_string();
    }
    go(&mut out, v, &mut Vec::new(), spell);
    out
}
