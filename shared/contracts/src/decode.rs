//! Decoding a request body: JSON → the rules of its generated JSON Schema → the typed
//! request, in that order, so the service refuses exactly what a client validating
//! against `schemas/` would refuse.
//!
//! 1. The body is parsed once into a value, refusing malformed JSON (with line and
//!    column), duplicate keys and U+0000 anywhere (PostgreSQL cannot store it), each with
//!    the JSON pointer of the fault.
//! 2. The value is validated against the request's schema (the same one written to
//!    `schemas/`); the first violation is the refusal, with its pointer and reason.
//! 3. Integers written with a fraction or exponent (`1.0`, `1e3`), which JSON Schema counts
//!    as integers, are rewritten as plain integers where the schema expects one.
//! 4. The typed request is decoded from the body's own text, so opaque values
//!    ([`crate::opaque::OpaqueJson`]) keep every digit and key order.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

use crate::error::{pointer_to, ErrorBody, ErrorReason};
use crate::rules::MAX_SAFE_INTEGER;

/// A request schema, compiled once.
pub struct Decoder {
    schema: Value,
    validator: jsonschema::Validator,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder").finish_non_exhaustive()
    }
}

impl Decoder {
    /// Compiles `schema` (a generated request schema; it is valid by construction).
    pub fn new(schema: schemars::Schema) -> Result<Self, String> {
        let schema = schema.to_value();
        let validator = jsonschema::validator_for(&schema).map_err(|e| e.to_string())?;
        Ok(Self { schema, validator })
    }

    /// The schema.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Whether `value` satisfies the schema (what a JSON Schema validator says of it).
    pub fn is_valid(&self, value: &Value) -> bool {
        self.validator.is_valid(value)
    }

    /// Decodes a request body into `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self, payload: &[u8]) -> Result<T, ErrorBody> {
        let (body, _) = self.split(payload, &[])?;
        typed(&body)
    }

    /// Decodes a request body into `T`, the fields named in `meta` into `M`.
    pub fn decode_with_meta<T, M>(&self, payload: &[u8], meta: &[&str]) -> Result<(M, T), ErrorBody>
    where
        T: serde::de::DeserializeOwned,
        M: serde::de::DeserializeOwned,
    {
        let (body, meta) = self.split(payload, meta)?;
        Ok((typed(&meta)?, typed(&body)?))
    }

    /// Steps 1-3: the body's text (integers normalised) without the `meta` fields, and the
    /// text of an object with just those.
    fn split(&self, payload: &[u8], meta: &[&str]) -> Result<(String, String), ErrorBody> {
        let value = parse(payload)?;
        let Value::Object(object) = &value else {
            return Err(ErrorBody::at(
                ErrorReason::NotAnObject,
                "",
                "the body must be a JSON object",
            ));
        };
        if !self.validator.is_valid(&value) {
            if let Some(error) = self.validator.iter_errors(&value).next() {
                return Err(explain(&self.schema, &error, "", 0));
            }
        }
        let properties = self.schema.get("properties");
        let mut fields = raw_fields(payload)?;
        for (key, raw) in &mut fields {
            let (Some(field), Some(field_schema)) =
                (object.get(key.as_str()), properties.and_then(|p| p.get(key.as_str())))
            else {
                continue;
            };
            let mut field = field.clone();
            if normalize(&self.schema, field_schema, &mut field, 0) {
                *raw = RawValue::from_string(field.to_string()).map_err(|e| internal(&e))?;
            }
        }
        let mut body = String::with_capacity(payload.len() + 2);
        let mut meta_text = String::from("{");
        body.push('{');
        for (key, raw) in &fields {
            let target = if meta.contains(&key.as_str()) {
                &mut meta_text
            } else {
                &mut body
            };
            if target.len() > 1 {
                target.push(',');
            }
            target.push_str(&Value::String(key.clone()).to_string());
            target.push(':');
            target.push_str(raw.get());
        }
        body.push('}');
        meta_text.push('}');
        Ok((body, meta_text))
    }
}

fn internal(e: &dyn fmt::Display) -> ErrorBody {
    ErrorBody::new(ErrorReason::Internal, format!("decoding failed: {e}"))
}

/// Decodes `T` from text that passed its schema; a refusal here is a rule the schema does
/// not state (a bug the differential test looks for), reported with its pointer.
fn typed<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ErrorBody> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = pointer_of(e.path());
        let inner = e.into_inner().to_string();
        let shown = if path.is_empty() {
            "the body".to_owned()
        } else {
            path.clone()
        };
        ErrorBody::at(ErrorReason::InvalidValue, path, format!("{shown}: {inner}"))
    })
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            serde_path_to_error::Segment::Map { key } => pointer = pointer_to(&pointer, key),
            serde_path_to_error::Segment::Enum { variant } => pointer = pointer_to(&pointer, variant),
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    pointer
}

/// The body's top-level fields as their own text, in order (a repeated key was refused
/// by [`parse`] already).
fn raw_fields(payload: &[u8]) -> Result<Vec<(String, Box<RawValue>)>, ErrorBody> {
    struct Fields;
    impl<'de> Visitor<'de> for Fields {
        type Value = Vec<(String, Box<RawValue>)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut fields = Vec::new();
            while let Some((key, value)) = map.next_entry::<String, Box<RawValue>>()? {
                fields.push((key, value));
            }
            Ok(fields)
        }
    }
    struct Seed;
    impl<'de> DeserializeSeed<'de> for Seed {
        type Value = Vec<(String, Box<RawValue>)>;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(Fields)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(payload);
    Seed.deserialize(&mut de).map_err(|e| internal(&e))
}

/// Parses a body into a value, refusing malformed JSON, repeated keys and U+0000.
pub fn parse(payload: &[u8]) -> Result<Value, ErrorBody> {
    let fault = RefCell::new(None);
    let path = RefCell::new(String::new());
    let mut de = serde_json::Deserializer::from_slice(payload);
    let parsed = Checked {
        path: &path,
        fault: &fault,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(value) => Ok(value),
        Err(e) => Err(fault.into_inner().unwrap_or_else(|| {
            ErrorBody::at(ErrorReason::MalformedJson, "", format!("malformed JSON: {e}"))
                .with("line", e.line())
                .with("column", e.column())
        })),
    }
}

/// Builds a [`Value`] while checking keys and strings; a fault is kept in `fault` (the
/// serde error only stops the parse).
struct Checked<'a> {
    path: &'a RefCell<String>,
    fault: &'a RefCell<Option<ErrorBody>>,
}

impl Checked<'_> {
    fn refuse<E: de::Error>(&self, error: ErrorBody) -> E {
        let message = error.message.clone();
        *self.fault.borrow_mut() = Some(error);
        E::custom(message)
    }

    /// Refuses `s` (a string or key at pointer `at`) if it holds U+0000. The pointer is
    /// exact (a key's own U+0000 included); the message spells it `\u0000`, so that no
    /// message holds the character.
    fn text<E: de::Error>(&self, s: &str, at: &str) -> Result<(), E> {
        if s.contains('\0') {
            let shown = if at.is_empty() {
                "the body".to_owned()
            } else {
                at.replace('\0', "\\u0000")
            };
            return Err(self.refuse(ErrorBody::at(
                ErrorReason::InvalidCharacter,
                at,
                format!("{shown}: U+0000 (\\u0000) cannot be stored; remove it"),
            )));
        }
        Ok(())
    }

    fn child(&self) -> Checked<'_> {
        Checked {
            path: self.path,
            fault: self.fault,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Checked<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        let at = self.path.borrow().clone();
        self.text(v, &at)?;
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        let at = self.path.borrow().clone();
        self.text(&v, &at)?;
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let saved = self.path.borrow().len();
            self.path.borrow_mut().push_str(&format!("/{}", items.len()));
            let item = seq.next_element_seed(self.child());
            self.path.borrow_mut().truncate(saved);
            match item? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let parent = self.path.borrow().clone();
            let at = pointer_to(&parent, &key);
            self.text(&key, &at)?;
            if object.contains_key(&key) {
                return Err(self.refuse(ErrorBody::at(
                    ErrorReason::DuplicateKey,
                    at.clone(),
                    format!("{at}: the key appears twice in one object; give it once"),
                )));
            }
            *self.path.borrow_mut() = at;
            let value = map.next_value_seed(self.child());
            *self.path.borrow_mut() = parent;
            object.insert(key, value?);
        }
        Ok(Value::Object(object))
    }
}

/// Follows a local `$ref` (`#/$defs/Name`), a few levels deep.
fn resolve<'a>(root: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..8 {
        match schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        {
            Some(pointer) => match root.pointer(pointer) {
                Some(target) => schema = target,
                None => return schema,
            },
            None => return schema,
        }
    }
    schema
}

fn allows_integer(schema: &Value) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "integer",
        Some(Value::Array(types)) => types.iter().any(|t| t == "integer"),
        _ => false,
    }
}

/// Rewrites integral floats as integers wherever `schema` expects an integer; true when
/// anything changed. Opaque values' schemas never expect one, so they are never touched.
fn normalize(root: &Value, schema: &Value, value: &mut Value, depth: u32) -> bool {
    if depth > 64 {
        return false;
    }
    let schema = resolve(root, schema);
    let mut changed = false;
    if allows_integer(schema) {
        if let Some(f) = value.as_f64().filter(|_| value.is_f64()) {
            if f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER as f64 {
                *value = if f < 0.0 {
                    Value::from(f as i64)
                } else {
                    Value::from(f as u64)
                };
                changed = true;
            }
        }
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties");
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, item) in map.iter_mut() {
                if let Some(sub) = properties.and_then(|p| p.get(key)).or(additional) {
                    changed |= normalize(root, sub, item, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items").filter(|i| i.is_object()) {
                for item in items.iter_mut() {
                    changed |= normalize(root, sub, item, depth + 1);
                }
            }
        }
        _ => {}
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for sub in schema.get(key).and_then(Value::as_array).into_iter().flatten() {
            changed |= normalize(root, sub, value, depth + 1);
        }
    }
    changed
}

/// Turns the first schema violation into a refusal with its reason, pointer and a message
/// that names the rule without echoing the value (which may be a secret or huge). `prefix`
/// is the pointer of the instance `error` is about (when explaining inside a branch).
fn explain(root: &Value, error: &jsonschema::ValidationError<'_>, prefix: &str, depth: u32) -> ErrorBody {
    use jsonschema::error::ValidationErrorKind as K;
    let at = format!("{prefix}{}", error.instance_path.as_str());
    let node = schema_node(root, error.schema_path.as_str());
    if let (K::AnyOf | K::OneOfNotValid, Some((node, _))) = (&error.kind, node) {
        if let Some(inner) = explain_branch(root, node, &error.instance, &at, depth) {
            return inner;
        }
    }
    let hint = node
        .and_then(|(node, parent)| node.get("description").or_else(|| parent.get("description")))
        .and_then(Value::as_str)
        .map(|d| format!(" ({})", first_sentence(d)))
        .unwrap_or_default();
    let (reason, path, what) = match &error.kind {
        K::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            (
                ErrorReason::MissingField,
                pointer_to(&at, name),
                format!("missing required field `{name}`"),
            )
        }
        K::AdditionalProperties { unexpected } => {
            let name = unexpected.first().cloned().unwrap_or_default();
            let allowed = node
                .and_then(|(node, _)| node.get("properties"))
                .and_then(Value::as_object)
                .map(|p| p.keys().cloned().collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            (
                ErrorReason::UnknownField,
                pointer_to(&at, &name),
                format!("unknown field `{name}`; the fields are: {allowed}"),
            )
        }
        K::Type { kind } => (
            ErrorReason::InvalidType,
            at.clone(),
            format!("expected {}, got {}", type_names(kind), json_type(&error.instance)),
        ),
        K::Pattern { .. } => (
            ErrorReason::InvalidValue,
            at.clone(),
            format!("does not have the required form{hint}"),
        ),
        K::MinLength { limit } => (
            ErrorReason::InvalidValue,
            at.clone(),
            format!("must have at least {limit} character(s){hint}"),
        ),
        K::MaxLength { limit } => (
            ErrorReason::InvalidValue,
            at.clone(),
            format!("must have at most {limit} characters{hint}"),
        ),
        K::Minimum { limit } => (
            ErrorReason::InvalidValue,
            at.clone(),
            format!("must be at least {limit}{hint}"),
        ),
        K::Maximum { limit } => (
            ErrorReason::InvalidValue,
            at.clone(),
            format!("must be at most {limit}{hint}"),
        ),
        K::ExclusiveMinimum { limit } => (
            ErrorReason::InvalidValue,
            at.clone(),
            format!("must be greater than {limit}{hint}"),
        ),
        K::ExclusiveMaximum { limit } => (
            ErrorReason::InvalidValue,
            at.clone(),
            format!("must be less than {limit}{hint}"),
        ),
        K::MinItems { limit } => (
            ErrorReason::InvalidValue,
            at.clone(),
            format!("must have at least {limit} item(s){hint}"),
        ),
        K::MaxItems { limit } => (
            ErrorReason::InvalidValue,
            at.clone(),
            format!("must have at most {limit} items{hint}"),
        ),
        K::MinProperties { limit } => (
            ErrorReason::InvalidValue,
            at.clone(),
            format!("must have at least {limit} field(s){hint}"),
        ),
        K::MaxProperties { limit } => (
            ErrorReason::InvalidValue,
            at.clone(),
            format!("must have at most {limit} fields{hint}"),
        ),
        K::Enum { options } => {
            let listed = options.as_array().map(Vec::as_slice).unwrap_or_default();
            let what = if listed.len() <= 12 {
                let names: Vec<String> = listed.iter().map(|o| o.to_string()).collect();
                format!("must be one of {}", names.join(", "))
            } else {
                format!("is not one of the {} allowed values{hint}", listed.len())
            };
            (ErrorReason::InvalidValue, at.clone(), what)
        }
        K::Constant { expected_value } => (
            ErrorReason::InvalidValue,
            at.clone(),
            format!("must be {expected_value}"),
        ),
        K::AnyOf | K::OneOfNotValid | K::OneOfMultipleValid | K::Not { .. } | K::FalseSchema => (
            ErrorReason::InvalidValue,
            at.clone(),
            format!("is not allowed as given{hint}"),
        ),
        K::UniqueItems => (
            ErrorReason::InvalidValue,
            at.clone(),
            format!("must not repeat an item{hint}"),
        ),
        _ => {
            // The validator's own words, cut short (by characters: a message may hold
            // any text of the body).
            let text: String = error.to_string().chars().take(200).collect();
            (ErrorReason::InvalidValue, at.clone(), text)
        }
    };
    let shown = if path.is_empty() {
        "the body".to_owned()
    } else {
        path.clone()
    };
    let got = match &error.kind {
        K::Required { .. } | K::AdditionalProperties { .. } => String::new(),
        _ => echo(&path, &error.instance),
    };
    ErrorBody::at(reason, path, format!("{shown}: {what}{got}"))
}

/// ` (got "…")` for a short string value outside client data (configs, schemas and STATE
/// may hold secrets or be huge: never echoed).
fn echo(path: &str, instance: &Value) -> String {
    let private = ["/config", "/state"].iter().any(|p| path.contains(p));
    match instance {
        Value::String(s) if !private && s.chars().count() <= 60 && !s.chars().any(char::is_control) => {
            format!(" (got {s:?})")
        }
        _ => String::new(),
    }
}

/// An `anyOf`/`oneOf` failure explained by its one branch of the instance's type (a
/// nullable integer out of range is a range error, not "no branch matched"), or as a type
/// error when no branch has the instance's type.
fn explain_branch(root: &Value, node: &Value, instance: &Value, at: &str, depth: u32) -> Option<ErrorBody> {
    if depth > 4 {
        return None;
    }
    let branches = node.get("anyOf").or_else(|| node.get("oneOf"))?.as_array()?;
    let typed: Vec<&Value> = branches.iter().map(|b| resolve(root, b)).collect();
    if typed.iter().any(|b| b.get("type").is_none()) {
        return None;
    }
    let matching: Vec<&&Value> = typed.iter().filter(|b| type_matches(b, instance)).collect();
    let shown = if at.is_empty() { "the body" } else { at };
    match matching.as_slice() {
        [] => {
            let expected: Vec<String> = typed
                .iter()
                .filter_map(|b| b.get("type"))
                .flat_map(|t| match t {
                    Value::Array(ts) => ts
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect::<Vec<_>>(),
                    other => other.as_str().map(str::to_owned).into_iter().collect::<Vec<_>>(),
                })
                .filter(|t| t != "null")
                .collect();
            Some(ErrorBody::at(
                ErrorReason::InvalidType,
                at,
                format!(
                    "{shown}: expected {}, got {}",
                    expected.join(" or "),
                    json_type(instance)
                ),
            ))
        }
        [branch] => {
            let mut sub = (**branch).clone();
            if let (Some(object), Some(defs)) = (sub.as_object_mut(), root.get("$defs")) {
                object.insert("$defs".into(), defs.clone());
            }
            let validator = jsonschema::validator_for(&sub).ok()?;
            let error = validator.iter_errors(instance).next()?;
            Some(explain(&sub, &error, at, depth + 1))
        }
        _ => None,
    }
}

fn type_matches(schema: &Value, instance: &Value) -> bool {
    let one = |t: &str| match (t, instance) {
        ("null", Value::Null) | ("boolean", Value::Bool(_)) | ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
        ("string", Value::String(_)) | ("array", Value::Array(_)) | ("object", Value::Object(_)) => true,
        _ => false,
    };
    match schema.get("type") {
        Some(Value::String(t)) => one(t),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).any(one),
        _ => true,
    }
}

fn first_sentence(text: &str) -> &str {
    let end = text.find(". ").map_or(text.len(), |i| i + 1);
    text[..end].trim_end_matches('.')
}

/// The schema node holding the failed keyword, and its parent node, following `$ref`s.
fn schema_node<'a>(root: &'a Value, schema_path: &str) -> Option<(&'a Value, &'a Value)> {
    let segments: Vec<String> = schema_path
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    let (_, walk) = segments.split_last()?;
    let mut node = root;
    let mut parent = root;
    for segment in walk {
        let next = if segment == "$ref" {
            resolve(root, node)
        } else {
            match node {
                Value::Object(map) => map.get(segment)?,
                Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                _ => return None,
            }
        };
        parent = node;
        node = next;
    }
    Some((resolve(root, node), parent))
}

fn type_names(kind: &jsonschema::error::TypeKind) -> String {
    match kind {
        jsonschema::error::TypeKind::Single(t) => t.to_string(),
        jsonschema::error::TypeKind::Multiple(set) => set
            .iter()
            .map(|t| t.to_string())
            .filter(|t| t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(r: Result<Value, ErrorBody>) -> Option<(ErrorReason, Option<String>)> {
        r.err().map(|e| (e.details.reason, e.details.path))
    }

    #[test]
    fn parse_refuses_duplicates_and_nul_with_their_pointer() {
        assert_eq!(
            reason(parse(br#"{"a":{"b":1,"b":2}}"#)),
            Some((ErrorReason::DuplicateKey, Some("/a/b".into())))
        );
        assert_eq!(
            reason(parse(br#"{"s":[1,{"x":"a\u0000"}]}"#)),
            Some((ErrorReason::InvalidCharacter, Some("/s/1/x".into())))
        );
        assert_eq!(
            reason(parse(br#"{"k\u0000":1}"#)),
            Some((ErrorReason::InvalidCharacter, Some("/k\u{0}".into())))
        );
        assert_eq!(reason(parse(b"{")).map(|r| r.0), Some(ErrorReason::MalformedJson));
        assert_eq!(reason(parse(b"{} x")).map(|r| r.0), Some(ErrorReason::MalformedJson));
        let v = parse(br#"{"z":1,"a":[true,null,"\\u0000 is text"]}"#).unwrap_or_default();
        assert_eq!(v.to_string(), r#"{"z":1,"a":[true,null,"\\u0000 is text"]}"#);
    }
}
