//! Plugin event payloads.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::opaque::OpaqueJson;
use uuid::Uuid;

use crate::model::{Grants, PluginKind, PluginRuntime, ResourceLimits};
use crate::values::{Digest, PluginName, PluginVersion};

/// A plugin version was registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PluginRegistered {
    /// Derived from name@version.
    pub plugin_id: Uuid,
    /// Name.
    pub name: PluginName,
    /// Version.
    pub version: PluginVersion,
    /// Kind.
    pub kind: PluginKind,
    /// Runtime.
    pub runtime: PluginRuntime,
    /// Module digest (wasm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_digest: Option<Digest>,
    /// Executable (process runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    /// Config JSON Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_schema: Option<OpaqueJson>,
    /// Limits.
    #[serde(default)]
    pub limits: ResourceLimits,
    /// Grants.
    #[serde(default)]
    pub grants: Grants,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The plugin was deprecated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PluginDeprecated {
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The plugin was disabled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PluginDisabled {
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The plugin was (re-)enabled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PluginEnabled {}
