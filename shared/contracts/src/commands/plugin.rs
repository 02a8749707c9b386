//! Plugin commands.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{Grants, PluginKind, PluginRuntime, ResourceLimits};
use crate::opaque::OpaqueJson;
use crate::rules::{ABSOLUTE_PATH_PATTERN, MAX_DESCRIPTION_CHARS, MAX_PATH_CHARS, MAX_REASON_CHARS};
use crate::values::{Digest, PluginName, PluginVersion};

/// `plugin.register`: registers `name@version`; the plugin id is derived from both, so
/// registering the same pair twice is a `conflict`. A `wasm` plugin (the default) needs
/// `module_digest` and has no `executable`; a `process` plugin needs an absolute
/// `executable` and has no `module_digest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("if" = {"properties": {"runtime": {"const": "process"}}, "required": ["runtime"]},
    "then" = {
        "description": "a process plugin needs executable (an absolute path on runner hosts) and has no module_digest",
        "required": ["executable"],
        "properties": {"executable": {"type": "string"}, "module_digest": {"type": "null"}}
    },
    "else" = {
        "description": "a wasm plugin needs module_digest (the sha256 of the module in the plugin store) and has no executable",
        "required": ["module_digest"],
        "properties": {"module_digest": {"type": "string"}, "executable": {"type": "null"}}
    }))]
pub struct RegisterPlugin {
    /// Plugin name.
    pub name: PluginName,
    /// Semantic version.
    pub version: PluginVersion,
    /// Extractor, transformer or loader.
    pub kind: PluginKind,
    /// `wasm` (sandboxed, default) or `process` (native, unsandboxed, opt-in).
    #[serde(default)]
    pub runtime: PluginRuntime,
    /// sha256 of the module bytes stored in the plugin object store (required for wasm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_digest: Option<Digest>,
    /// Absolute executable path on runner hosts (required for the process runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_PATH_CHARS), regex(pattern = ABSOLUTE_PATH_PATTERN))]
    pub executable: Option<String>,
    /// JSON Schema (draft 2020-12 unless it declares another `$schema`) that step configs
    /// must satisfy; any object when absent. Kept exactly as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "config_schema_schema")]
    pub config_schema: Option<OpaqueJson>,
    /// Resource limits.
    #[serde(default)]
    pub limits: ResourceLimits,
    /// Capability grants (none by default).
    #[serde(default)]
    pub grants: Grants,
    /// What the plugin does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DESCRIPTION_CHARS))]
    pub description: Option<String>,
}

/// A plugin's config schema: a JSON Schema object (checked against the 2020-12 meta-schema)
/// whose strings and keys have no U+0000, or `null`.
fn config_schema_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let json = generator.subschema_for::<OpaqueJson>();
    schemars::json_schema!({
        "description": "A JSON Schema object that step configs must satisfy, valid against the draft 2020-12 meta-schema.",
        "anyOf": [
            {"type": "null"},
            {"allOf": [json, {"type": "object"}, {"$ref": "https://json-schema.org/draft/2020-12/schema"}]}
        ]
    })
}

/// `plugin.deprecate`: an active plugin stays usable but is flagged for replacement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeprecatePlugin {
    /// The plugin.
    pub plugin_id: Uuid,
    /// Why, and what to use instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_CHARS))]
    pub reason: Option<String>,
}

/// `plugin.disable`: new pipelines and runs may no longer use the plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DisablePlugin {
    /// The plugin.
    pub plugin_id: Uuid,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_CHARS))]
    pub reason: Option<String>,
}

/// `plugin.enable`: a deprecated or disabled plugin becomes active again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnablePlugin {
    /// The plugin.
    pub plugin_id: Uuid,
}
