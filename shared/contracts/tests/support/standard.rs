//! What a client that validates against `schemas/` sees: the request and reply schema
//! files compiled by a standard validator (the `jsonschema` crate, draft as each file
//! declares), and whether a body is JSON it can judge at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flexcore_contracts::decode;
use flexcore_contracts::ErrorReason;
use serde_json::Value;

use super::corpus::Kind;

/// Reasons of a refusal for a body's form: the rules a schema states (or JSON itself).
/// A body a standard validator accepts is never refused with one of these; one it
/// refuses always is.
pub const SCHEMA_REASONS: &[ErrorReason] = &[
    ErrorReason::MalformedJson,
    ErrorReason::NotAnObject,
    ErrorReason::DuplicateKey,
    ErrorReason::InvalidCharacter,
    ErrorReason::MissingField,
    ErrorReason::UnknownField,
    ErrorReason::InvalidType,
    ErrorReason::InvalidValue,
];

/// The repository root (the directory holding `schemas/`), found above this crate.
pub fn root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|dir| dir.join("schemas/commands").is_dir())
        .unwrap_or_else(|| panic!("no schemas/ above {}", here.display()))
        .to_path_buf()
}

/// A schema file and its compiled validator.
pub struct Schema {
    /// The file's JSON.
    pub json: Value,
    /// A standard validator of it.
    pub validator: jsonschema::Validator,
}

impl Schema {
    /// Reads and compiles `schemas/<relative>`.
    pub fn load(relative: &str) -> Self {
        let path = root().join("schemas").join(relative);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let validator =
            jsonschema::validator_for(&json).unwrap_or_else(|e| panic!("{} does not compile: {e}", path.display()));
        Self { json, validator }
    }

    /// The standard verdict on `value`.
    pub fn accepts(&self, value: &Value) -> bool {
        self.validator.is_valid(value)
    }
}

/// Every request schema file (`commands/*.json`, `queries/*.json`) and the reply schemas.
pub struct Schemas {
    /// Request schemas by kind and name (`pipeline.create`).
    pub requests: BTreeMap<(Kind, String), Schema>,
    /// `replies/command-reply.json`.
    pub command_reply: Schema,
    /// `replies/query-reply.json`.
    pub query_reply: Schema,
}

impl Schemas {
    /// Loads every file of `schemas/commands` and `schemas/queries` and the reply schemas.
    pub fn load() -> Self {
        let mut requests = BTreeMap::new();
        for kind in [Kind::Command, Kind::Query] {
            let dir = root().join("schemas").join(kind.dir());
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                let Some(name) = file.strip_suffix(".json") else {
                    continue;
                };
                let schema = Schema::load(&format!("{}/{file}", kind.dir()));
                requests.insert((kind, name.to_owned()), schema);
            }
        }
        Self {
            requests,
            command_reply: Schema::load("replies/command-reply.json"),
            query_reply: Schema::load("replies/query-reply.json"),
        }
    }

    /// The schema of request `name`.
    pub fn request(&self, kind: Kind, name: &str) -> &Schema {
        self.requests
            .get(&(kind, name.to_owned()))
            .unwrap_or_else(|| panic!("no schemas/{}/{name}.json", kind.dir()))
    }

    /// The reply schema of requests of `kind`.
    pub fn reply(&self, kind: Kind) -> &Schema {
        match kind {
            Kind::Command => &self.command_reply,
            Kind::Query => &self.query_reply,
        }
    }
}

/// A body as a validator can see it.
#[derive(Debug, Clone)]
pub enum Form {
    /// JSON without repeated keys: a validator judges this value.
    Json(Value),
    /// Not something a JSON Schema validator can judge: not JSON (or numbers beyond a
    /// double) or an object with a repeated key (which value would it judge?). The
    /// decoders refuse it with this reason.
    Unjudgeable(ErrorReason),
}

/// What a validator gets from `payload`. A query's empty body is `{}` (as the decoder
/// reads it).
pub fn form(kind: Kind, payload: &[u8]) -> Form {
    let payload: &[u8] = if kind == Kind::Query && payload.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        payload
    };
    match decode::parse(payload) {
        Ok(value) => Form::Json(value),
        // U+0000 is JSON: the schemas refuse it (a repeated key after it cannot make a
        // body the schemas accept, so the last value of a key is as good as any). The
        // decoder stops at the first fault, so JSON that breaks later is refused for it.
        Err(e) if e.reason() == ErrorReason::InvalidCharacter => match serde_json::from_slice(payload) {
            Ok(value) => Form::Json(value),
            Err(_) => Form::Unjudgeable(ErrorReason::InvalidCharacter),
        },
        Err(e) => Form::Unjudgeable(e.reason()),
    }
}
