//! Client data FlexCore does not interpret (Singer STATE, plugin config schemas, step
//! configs), kept as the exact JSON text the client sent: every digit of every number
//! (beyond what a 64-bit float holds), the order of object keys and the escapes survive
//! the command, the event log, the stream and the read models unchanged.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::rules::{CONFIG_STRING_PATTERN, TEXT_PATTERN};

/// Any JSON value, kept as written.
#[derive(Clone)]
pub struct OpaqueJson(Box<RawValue>);

impl OpaqueJson {
    /// `null`.
    pub fn null() -> Self {
        Self::parse("null").unwrap_or_else(|_| unreachable!("null is JSON"))
    }

    /// The value of `text`, which must be one JSON value.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text.to_owned()).map(Self)
    }

    /// A value built in code (written compactly).
    pub fn from_value(value: &Value) -> Self {
        Self::parse(&value.to_string()).unwrap_or_else(|_| Self::null())
    }

    /// The exact text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Whether it is `null`.
    pub fn is_null(&self) -> bool {
        self.as_str().trim() == "null"
    }

    /// Parsed for inspection (numbers beyond a 64-bit float's precision are rounded: never
    /// write this back in place of the original).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.as_str()).unwrap_or(Value::Null)
    }

    /// Decodes the value into `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.as_str())
    }
}

impl Default for OpaqueJson {
    fn default() -> Self {
        Self::null()
    }
}

impl PartialEq for OpaqueJson {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for OpaqueJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for OpaqueJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for OpaqueJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for OpaqueJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self)
    }
}

impl From<Value> for OpaqueJson {
    fn from(value: Value) -> Self {
        Self::from_value(&value)
    }
}

impl JsonSchema for OpaqueJson {
    fn schema_name() -> Cow<'static, str> {
        "Json".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let this = generator.subschema_for::<Self>();
        json_schema!({
            "description": "Any JSON value, kept exactly as written (digits, key order). Strings and keys may not contain U+0000; numbers must fit a 64-bit float's range (their digits are kept in full).",
            "pattern": TEXT_PATTERN,
            "items": this,
            "propertyNames": {"pattern": TEXT_PATTERN},
            "additionalProperties": this,
        })
    }
}

/// A step's config: a JSON object kept as written. Strings anywhere in it may hold secret
/// references `${secret:NAME}`, resolved only by the runner.
#[derive(Clone, PartialEq)]
pub struct StepConfig(OpaqueJson);

impl StepConfig {
    /// `{}`.
    pub fn empty() -> Self {
        Self(OpaqueJson::parse("{}").unwrap_or_else(|_| unreachable!("{{}} is JSON")))
    }

    /// A config built in code; `None` unless `value` is an object.
    pub fn from_value(value: &Value) -> Option<Self> {
        value.is_object().then(|| Self(OpaqueJson::from_value(value)))
    }

    /// The exact text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The config as an object for inspection (see [`OpaqueJson::to_value`]).
    pub fn to_map(&self) -> serde_json::Map<String, Value> {
        match self.0.to_value() {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        }
    }

    /// The opaque value.
    pub fn as_json(&self) -> &OpaqueJson {
        &self.0
    }
}

impl Default for StepConfig {
    fn default() -> Self {
        Self::empty()
    }
}

impl fmt::Debug for StepConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for StepConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StepConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = OpaqueJson::deserialize(deserializer)?;
        if !json.as_str().trim_start().starts_with('{') {
            return Err(serde::de::Error::custom("a step config must be a JSON object"));
        }
        Ok(Self(json))
    }
}

/// A value inside a step config (for the schema only).
struct ConfigValue;

impl JsonSchema for ConfigValue {
    fn schema_name() -> Cow<'static, str> {
        "ConfigValue".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let this = generator.subschema_for::<Self>();
        json_schema!({
            "description": "Any JSON value of a step config. Strings may not contain U+0000, and every `${secret:` in them must open a reference `${secret:NAME}` (NAME: letters, digits and `_`, not starting with a digit).",
            "pattern": CONFIG_STRING_PATTERN,
            "items": this,
            "propertyNames": {"pattern": TEXT_PATTERN},
            "additionalProperties": this,
        })
    }
}

impl JsonSchema for StepConfig {
    fn schema_name() -> Cow<'static, str> {
        "StepConfig".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let value = generator.subschema_for::<ConfigValue>();
        json_schema!({
            "description": "A step's config: a JSON object kept exactly as written, validated against the plugin's config schema. Secrets appear only as `${secret:NAME}` references.",
            "type": "object",
            "propertyNames": {"pattern": TEXT_PATTERN},
            "additionalProperties": value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_text_survives_a_round_trip() {
        let text = r#"{"z":524560164915.88403,"a":123456789012345678901234567890,"e":1.5e3,"k":[1.0]}"#;
        let body = format!(r#"{{"state":{text}}}"#);
        #[derive(Serialize, Deserialize)]
        struct Holder {
            state: OpaqueJson,
        }
        let h: Holder = serde_json::from_str(&body).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(h.state.as_str(), text);
        assert_eq!(serde_json::to_string(&h).ok().as_deref(), Some(body.as_str()));
        assert!(OpaqueJson::null().is_null());
    }

    #[test]
    fn step_configs_are_objects() {
        let ok: Result<StepConfig, _> = serde_json::from_str(r#" {"b":1,"a":2}"#);
        assert_eq!(
            ok.map(|c| c.to_map().keys().cloned().collect::<Vec<_>>()).ok(),
            Some(vec!["b".to_owned(), "a".to_owned()])
        );
        assert!(serde_json::from_str::<StepConfig>("[1]").is_err());
    }
}
