//! Plugin commands.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{Grants, PluginKind, PluginRuntime, ResourceLimits};
use crate::values::{Digest, PluginName, PluginVersion};

/// `plugin.register`: registers `name@version`; the plugin id is derived from both, so
/// registering the same pair twice is a `conflict`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
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
    /// Executable path on runner hosts (required for the process runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    /// JSON Schema that step configs must satisfy; any object when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_schema: Option<serde_json::Value>,
    /// Resource limits.
    #[serde(default)]
    pub limits: ResourceLimits,
    /// Capability grants (none by default).
    #[serde(default)]
    pub grants: Grants,
    /// What the plugin does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `plugin.deprecate`: an active plugin stays usable but is flagged for replacement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeprecatePlugin {
    /// The plugin.
    pub plugin_id: Uuid,
    /// Why, and what to use instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    pub reason: Option<String>,
}

/// `plugin.enable`: a deprecated or disabled plugin becomes active again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnablePlugin {
    /// The plugin.
    pub plugin_id: Uuid,
}
