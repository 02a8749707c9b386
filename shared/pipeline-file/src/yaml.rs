//! YAML → JSON with positions: every value's path (`steps[1].config.path`, the form the
//! contracts' decode errors use) maps to its line and column, so an error found later
//! (by flexctl's own decode, or by the command service) points at the line to fix.
//!
//! Which position a path gets: a scalar's own; a mapping's or sequence's under a key,
//! the key's (`config:`: a block mapping's own start is where its first key's `:` is,
//! which is no place a person looks); a mapping in a sequence or at the root, its first
//! key's. So an error about a missing or unknown key of `config` points at `config:`,
//! and one about an unknown key (whose path ends in that key) at the key itself.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

/// A line and column, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line.
    pub line: usize,
    /// Column.
    pub column: usize,
}

/// A parsed document.
#[derive(Debug, Clone)]
pub struct Document {
    /// The document as JSON.
    pub value: Value,
    positions: HashMap<String, Position>,
    keys: HashMap<String, Position>,
}

impl Document {
    /// Where the value at `path` starts; falls back to the closest enclosing value.
    pub fn position(&self, path: &str) -> Option<Position> {
        let mut path = path.trim_start_matches('.').to_owned();
        loop {
            if let Some(p) = self.positions.get(&path) {
                return Some(*p);
            }
            let cut = path.rfind(['.', '['])?;
            path.truncate(cut);
        }
    }

    /// Where the key of the value at `path` is (`descripton` of `descripton: x`), for an
    /// error about the key itself; [`Self::position`] when `path` names no key.
    pub fn key_position(&self, path: &str) -> Option<Position> {
        self.keys
            .get(path.trim_start_matches('.'))
            .copied()
            .or_else(|| self.position(path))
    }
}

/// Parses one YAML document. Errors carry the line and column.
pub fn parse(text: &str) -> Result<Document, String> {
    let mut builder = Builder::default();
    Parser::new_from_str(text)
        .load(&mut builder, true)
        .map_err(|e| format!("line {}: {e}", e.marker().line()))?;
    if let Some(error) = builder.error {
        return Err(error);
    }
    if builder.documents > 1 {
        return Err("the file holds more than one YAML document (`---`); put one pipeline per file".to_owned());
    }
    Ok(Document {
        value: builder.root.unwrap_or(Value::Null),
        positions: builder.positions,
        keys: builder.keys,
    })
}

enum Frame {
    Sequence(Vec<Value>, String),
    Mapping(Map<String, Value>, String, Option<String>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<(Frame, usize)>,
    root: Option<Value>,
    anchors: HashMap<usize, Value>,
    positions: HashMap<String, Position>,
    keys: HashMap<String, Position>,
    documents: usize,
    error: Option<String>,
}

impl Builder {
    /// Records where key `key` of the innermost mapping is (the path of its value, until
    /// the value's own position replaces it when it is a scalar), and where the mapping
    /// is, if that is not known yet (its first key).
    fn key_position(&mut self, key: &str, position: Position) {
        let Some((Frame::Mapping(_, path, _), _)) = self.stack.last() else {
            return;
        };
        let path = path.clone();
        let child = if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        };
        self.positions.insert(child.clone(), position);
        self.keys.insert(child, position);
        self.positions.entry(path).or_insert(position);
    }

    /// The path of the next value, and (for a mapping) whether it is a key.
    fn next_path(&self) -> (String, bool) {
        match self.stack.last() {
            None => (String::new(), false),
            Some((Frame::Sequence(items, path), _)) => (format!("{path}[{}]", items.len()), false),
            Some((Frame::Mapping(_, _, None), _)) => (String::new(), true),
            Some((Frame::Mapping(_, path, Some(key)), _)) => (
                if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                },
                false,
            ),
        }
    }

    fn fail(&mut self, mark: Marker, message: &str) {
        if self.error.is_none() {
            self.error = Some(format!("line {}: {message}", mark.line()));
        }
    }

    fn value(&mut self, value: Value, anchor: usize, mark: Marker) {
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        let problem = match self.stack.last_mut() {
            None => {
                self.root = Some(value);
                None
            }
            Some((Frame::Sequence(items, _), _)) => {
                items.push(value);
                None
            }
            Some((Frame::Mapping(map, _, key), _)) => match key.take() {
                None => match value {
                    Value::String(k) => {
                        let twice = map.contains_key(&k).then(|| format!("key {k:?} is given twice"));
                        *key = Some(k);
                        twice
                    }
                    Value::Number(n) => {
                        *key = Some(n.to_string());
                        None
                    }
                    Value::Bool(b) => {
                        *key = Some(b.to_string());
                        None
                    }
                    _ => Some("a mapping key must be a plain string".to_owned()),
                },
                Some(k) => {
                    map.insert(k, value);
                    None
                }
            },
        };
        if let Some(message) = problem {
            self.fail(mark, &message);
        }
    }
}

fn scalar(text: String, style: TScalarStyle) -> Value {
    if style != TScalarStyle::Plain {
        return Value::String(text);
    }
    match Yaml::from_str(&text) {
        Yaml::Integer(i) => Value::Number(i.into()),
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or(Value::String(text), Value::Number),
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Null => Value::Null,
        _ => Value::String(text),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let (path, is_key) = self.next_path();
        let position = Position {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match event {
            Event::DocumentStart => self.documents += 1,
            Event::Scalar(text, style, anchor, _) => {
                if is_key {
                    self.key_position(&text, position);
                } else {
                    self.positions.insert(path, position);
                }
                self.value(scalar(text, style), anchor, mark);
            }
            Event::Alias(anchor) => match self.anchors.get(&anchor).cloned() {
                Some(v) => {
                    self.positions.insert(path, position);
                    self.value(v, 0, mark);
                }
                None => self.fail(mark, "alias of an unknown anchor"),
            },
            Event::SequenceStart(anchor, _) => {
                if is_key {
                    return self.fail(mark, "a mapping key must be a plain string");
                }
                self.positions.entry(path.clone()).or_insert(position);
                self.stack.push((Frame::Sequence(Vec::new(), path), anchor));
            }
            Event::MappingStart(anchor, _) => {
                if is_key {
                    return self.fail(mark, "a mapping key must be a plain string");
                }
                // Under a key the key's position is there already; elsewhere the first
                // key's is taken (see the module's comment).
                self.stack.push((Frame::Mapping(Map::new(), path, None), anchor));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((frame, anchor)) = self.stack.pop() {
                    let value = match frame {
                        Frame::Sequence(items, _) => Value::Array(items),
                        Frame::Mapping(map, _, _) => Value::Object(map),
                    };
                    self.value(value, anchor, mark);
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TEXT: &str = "\
name: demo
retries: 3
ratio: 0.5
on: true
nothing: ~
quoted: \"007\"
steps:
  - plugin: generator@1.0.0
    config:
      records: 10
  - plugin: jsonl@1.0.0
";

    #[test]
    fn yaml_becomes_json_with_typed_scalars() {
        let doc = parse(TEXT).unwrap();
        assert_eq!(
            doc.value,
            json!({"name": "demo", "retries": 3, "ratio": 0.5, "on": true, "nothing": null, "quoted": "007",
                   "steps": [{"plugin": "generator@1.0.0", "config": {"records": 10}}, {"plugin": "jsonl@1.0.0"}]})
        );
    }

    #[test]
    fn paths_map_to_lines_and_unknown_paths_to_their_parent() {
        let doc = parse(TEXT).unwrap();
        let line = |p: &str| doc.position(p).map(|p| p.line);
        assert_eq!(line("name"), Some(1));
        assert_eq!(line("steps"), Some(7), "a block under a key: the key's line");
        assert_eq!(
            line("steps[0]"),
            Some(8),
            "a mapping in a sequence: its first key's line"
        );
        assert_eq!(line("steps[0].config"), Some(9));
        assert_eq!(line(""), Some(1));
        assert_eq!(line("steps[0].config.records"), Some(10));
        assert_eq!(line("steps[1].plugin"), Some(11));
        assert_eq!(line("steps[1].config"), Some(11), "missing: its step's line");
        assert_eq!(doc.position("steps[0].plugin").map(|p| p.column), Some(13));
    }

    #[test]
    fn blocks_point_at_their_key_and_mappings_at_their_first_key() {
        let doc = parse("name: demo\nsteps:\n\n  - plugin: a\n    config:\n      x: 1\n  -   plugin: b\n").unwrap();
        let at = |p: &str| doc.position(p).map(|p| (p.line, p.column));
        assert_eq!(at(""), Some((1, 1)), "the root: its first key, not the `:` after it");
        assert_eq!(at("steps"), Some((2, 1)));
        assert_eq!(at("steps[0]"), Some((4, 5)));
        assert_eq!(at("steps[0].config"), Some((5, 5)));
        assert_eq!(at("steps[0].config.x"), Some((6, 10)));
        assert_eq!(
            at("steps[0].config.y"),
            Some((5, 5)),
            "an unknown key: its mapping's key"
        );
        assert_eq!(at("steps[1]"), Some((7, 7)));
        let flow = parse("a: {b: 1}\nc: [1, 2]\n").unwrap();
        assert_eq!(flow.position("a").map(|p| p.line), Some(1));
        assert_eq!(flow.position("c[1]").map(|p| (p.line, p.column)), Some((2, 8)));
    }

    #[test]
    fn syntax_errors_duplicate_keys_and_several_documents_are_refused_with_a_line() {
        let e = parse("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(e.starts_with("line "), "{e}");
        assert_eq!(
            parse("a: 1\nb: 2\na: 3\n").unwrap_err(),
            "line 3: key \"a\" is given twice"
        );
        assert!(parse("a: 1\n---\nb: 2\n").unwrap_err().contains("more than one"));
    }

    #[test]
    fn anchors_and_aliases_are_expanded() {
        let doc = parse("base: &b {x: 1}\ncopy: *b\n").unwrap();
        assert_eq!(doc.value, json!({"base": {"x": 1}, "copy": {"x": 1}}));
    }
}
