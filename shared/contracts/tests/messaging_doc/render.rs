//! JSON Schemas (as schemars generates them from the contract types) rendered as Markdown:
//! one-line type names, field tables, enum value tables, and the shared `$defs` types.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Every named type met in the rendered schemas (their `$defs`, plus top-level types
/// registered by title), so each is described once in the "Types" section.
#[derive(Default)]
pub struct Types {
    defs: BTreeMap<String, Value>,
}

impl Types {
    /// Registers the `$defs` of `schema`. Two different types with one name would make
    /// links ambiguous, so that fails the generator.
    pub fn collect(&mut self, schema: &Value) {
        let Some(defs) = schema.get("$defs").and_then(Value::as_object) else {
            return;
        };
        for (name, def) in defs {
            self.insert(name, def);
        }
    }

    /// Registers `schema` itself under its title (and its `$defs`).
    pub fn collect_top(&mut self, schema: &Value) -> String {
        self.collect(schema);
        let name = title(schema);
        self.insert(&name, schema);
        name
    }

    fn insert(&mut self, name: &str, schema: &Value) {
        let mut def = schema.clone();
        if let Some(o) = def.as_object_mut() {
            for key in ["$schema", "$defs", "title"] {
                o.remove(key);
            }
        }
        match self.defs.get(name) {
            Some(existing) if *existing != def => {
                panic!("two different contract types are both called {name}: rename one")
            }
            _ => {
                self.defs.insert(name.to_owned(), def);
            }
        }
    }

    /// The "Types" section body: every registered type, by name.
    pub fn section(&self) -> String {
        let mut out = String::new();
        for (name, def) in &self.defs {
            out.push_str(&format!("<a id=\"{}\"></a>\n\n#### `{name}`\n\n", anchor(name)));
            out.push_str(&describe(def));
        }
        out
    }
}

/// The HTML anchor of a named type.
pub fn anchor(name: &str) -> String {
    format!("type-{}", name.to_lowercase())
}

/// The title of a top-level schema.
pub fn title(schema: &Value) -> String {
    schema
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("schema without a title: {schema}"))
        .to_owned()
}

/// A schema's description on one line (`""` when it has none), its rustdoc links
/// (``[`RunView`]``) turned into links to the named types.
pub fn description(schema: &Value) -> String {
    let text = one_line(schema.get("description").and_then(Value::as_str).unwrap_or(""));
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("[`") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        match after.find("`]") {
            Some(end) if !after[end + 2..].starts_with('(') && after[..end].chars().all(char::is_alphanumeric) => {
                let name = &after[..end];
                out.push_str(&format!("[`{name}`](#{})", anchor(name)));
                rest = &after[end + 2..];
            }
            _ => {
                out.push_str("[`");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Text on one line, safe inside a table cell.
pub fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// A type in a few words, with links to named types.
pub fn ty(schema: &Value) -> String {
    let Some(o) = schema.as_object() else {
        return "any JSON".into();
    };
    if let Some(r) = o.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        return format!("[`{name}`](#{})", anchor(name));
    }
    if let Some(c) = o.get("const") {
        return format!("`{}`", literal(c));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alternatives) = o.get(key).and_then(Value::as_array) {
            return alternatives.iter().map(ty).collect::<Vec<_>>().join(" or ");
        }
    }
    let types: Vec<&str> = match o.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.is_empty() {
        return "any JSON".into();
    }
    types.iter().map(|t| one_type(t, o)).collect::<Vec<_>>().join(" or ")
}

fn one_type(t: &str, o: &Map<String, Value>) -> String {
    let format = o.get("format").and_then(Value::as_str);
    match t {
        "string" => match format {
            Some(f) => format!("string ({f})"),
            None => "string".into(),
        },
        "integer" => match format {
            Some(f) if f.starts_with("uint") => "integer ≥ 0".into(),
            _ => "integer".into(),
        },
        "array" => format!("array of {}", o.get("items").map_or_else(|| "any JSON".into(), ty)),
        "object" => match o.get("additionalProperties") {
            Some(inner @ Value::Object(_)) if !o.contains_key("properties") => {
                format!("object (map of string to {})", ty(inner))
            }
            _ => "object".into(),
        },
        other => other.into(),
    }
}

/// A JSON value as written in prose: strings without their quotes.
pub fn literal(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The field table of an object schema, leaving out `skip`; `None` when it has no fields.
pub fn fields(schema: &Value, skip: &[&str]) -> Option<String> {
    let props = schema.get("properties").and_then(Value::as_object)?;
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let rows: Vec<String> = props
        .iter()
        .filter(|(name, _)| !skip.contains(&name.as_str()))
        .map(|(name, field)| {
            let default = field.get("default").map(|d| format!("`{d}`")).unwrap_or_default();
            format!(
                "| `{name}` | {} | {} | {} | {} |",
                ty(field),
                if required.contains(&name.as_str()) { "yes" } else { "no" },
                default.replace('|', "\\|"),
                description(field)
            )
        })
        .collect();
    if rows.is_empty() {
        return None;
    }
    let mut out = String::from("| Field | Type | Required | Default | Description |\n|---|---|---|---|---|\n");
    for row in rows {
        out.push_str(&row);
        out.push('\n');
    }
    Some(out)
}

/// Whether an object schema refuses unknown fields.
pub fn closed(schema: &Value) -> bool {
    schema.get("additionalProperties") == Some(&Value::Bool(false))
}

/// The value table of a string enum (`oneOf` of `const`s); `None` for other schemas.
pub fn values(schema: &Value) -> Option<String> {
    let alternatives = schema.get("oneOf").and_then(Value::as_array)?;
    let mut out = String::from("| Value | Meaning |\n|---|---|\n");
    for alternative in alternatives {
        let value = alternative.get("const")?;
        out.push_str(&format!("| `{}` | {} |\n", literal(value), description(alternative)));
    }
    Some(out)
}

/// A named type: its description, then its fields, values or shape.
pub fn describe(schema: &Value) -> String {
    let mut out = String::new();
    let about = description(schema);
    if !about.is_empty() {
        out.push_str(&about);
        out.push_str("\n\n");
    }
    if let Some(table) = values(schema) {
        out.push_str(&table);
    } else if let Some(table) = fields(schema, &[]) {
        if closed(schema) {
            out.push_str("Unknown fields are refused.\n\n");
        }
        out.push_str(&table);
    } else if schema.get("type") == Some(&Value::from("object"))
        && schema
            .get("properties")
            .is_none_or(|p| p.as_object().is_some_and(|p| p.is_empty()))
        && !schema.get("additionalProperties").is_some_and(Value::is_object)
    {
        out.push_str("No fields: `{}` (or, for a query, an empty body).\n");
    } else {
        out.push_str(&format!("Type: {}.\n", ty(schema)));
    }
    out.push('\n');
    out
}
