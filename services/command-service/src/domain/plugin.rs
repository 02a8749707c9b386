//! The Plugin aggregate: one registered `name@version`, its id derived from both so that
//! registering the same pair twice addresses the same aggregate (a `conflict`).

use flexcore_contracts::commands::{DeprecatePlugin, DisablePlugin, EnablePlugin, RegisterPlugin};
use flexcore_contracts::events::{PluginDeprecated, PluginDisabled, PluginEnabled, PluginEvent, PluginRegistered};
use flexcore_contracts::model::{Grants, PluginKind, PluginRuntime, ResourceLimits};
use flexcore_contracts::values::{Digest, PluginName, PluginVersion};
use flexcore_contracts::ErrorReason;
use serde_json::Value;
use uuid::Uuid;

use super::{validation, AggRef, Aggregate, Decision, DomainError, Loaded};

pub use flexcore_contracts::lifecycle::PluginStatus;

/// A registered plugin version.
#[derive(Debug, Clone, PartialEq)]
pub struct Plugin {
    /// Derived from name@version.
    pub id: Uuid,
    /// Name.
    pub name: PluginName,
    /// Semantic version.
    pub version: PluginVersion,
    /// Extractor, transformer or loader: decides where it may sit in a pipeline.
    pub kind: PluginKind,
    /// Wasm (sandboxed) or process (native).
    pub runtime: PluginRuntime,
    /// sha256 of the module (wasm), pinned into pipelines that use it.
    pub module_digest: Option<Digest>,
    /// Absolute path on runner hosts (process).
    pub executable: Option<String>,
    /// JSON Schema of step configs; any object when absent.
    pub config_schema: Option<Value>,
    /// Resource limits.
    pub limits: ResourceLimits,
    /// Capability grants.
    pub grants: Grants,
    /// What it does.
    pub description: Option<String>,
    /// Lifecycle state.
    pub status: PluginStatus,
    /// Reason given with the last deprecation or disabling (cleared on enable).
    pub status_reason: Option<String>,
}

impl Plugin {
    /// `name@version`, as steps refer to it.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

impl Aggregate for Plugin {
    fn create(event: &PluginEvent) -> Result<Self, DomainError> {
        let (Some(status), PluginEvent::Registered(e)) = (PluginStatus::initial(event), event) else {
            return Err(DomainError::Corrupt(format!(
                "the first plugin event must be plugin.registered, not {}",
                event.event_type()
            )));
        };
        Ok(Self {
            id: e.plugin_id,
            name: e.name.clone(),
            version: e.version.clone(),
            kind: e.kind,
            runtime: e.runtime,
            module_digest: e.module_digest.clone(),
            executable: e.executable.clone(),
            config_schema: e.config_schema.as_ref().map(|s| s.to_value()),
            limits: e.limits.clone(),
            grants: e.grants.clone(),
            description: e.description.clone(),
            status,
            status_reason: None,
        })
    }

    fn apply(&mut self, event: &PluginEvent) -> Result<(), DomainError> {
        self.status_reason = match event {
            PluginEvent::Registered(_) => {
                return Err(DomainError::Corrupt(format!("plugin {} is registered twice", self.id)))
            }
            PluginEvent::Deprecated(e) => e.reason.clone(),
            PluginEvent::Disabled(e) => e.reason.clone(),
            PluginEvent::Enabled(_) => None,
        };
        self.status = self.status.after(event);
        Ok(())
    }
}

fn load(id: Uuid, loaded: &Loaded) -> Result<&Plugin, DomainError> {
    loaded.plugin(id).ok_or_else(|| {
        DomainError::NotFound(format!(
                "plugin {id} does not exist; list the registered ones: `flexctl plugin list` or \
                 GET /api/v1/flexcore/plugins; register one: `flexctl plugin register` or POST /api/v1/flexcore/plugins"
            ))
    })
}

/// `plugin.register`. The body's own rules (a wasm plugin has a digest and no executable,
/// a process plugin an absolute executable and no digest, limits of at least 1, a config
/// schema valid against the meta-schema) are the command schema's; what is left is whether
/// the id is free and whether the config schema compiles.
pub(crate) fn register(id: Uuid, c: &RegisterPlugin, loaded: &Loaded) -> Result<Decision, DomainError> {
    if loaded.plugin(id).is_some() {
        return Err(DomainError::conflict(
            ErrorReason::Exists,
            format!(
                "plugin {}@{} is already registered; register a new version instead",
                c.name, c.version
            ),
        )
        .with("plugin_id", id.to_string()));
    }
    if let Some(schema) = &c.config_schema {
        validation::compile_config_schema(&schema.to_value())?;
    }
    let event = PluginRegistered {
        plugin_id: id,
        name: c.name.clone(),
        version: c.version.clone(),
        kind: c.kind,
        runtime: c.runtime,
        module_digest: c.module_digest.clone(),
        executable: c.executable.clone(),
        config_schema: c.config_schema.clone(),
        limits: c.limits.clone(),
        grants: c.grants.clone(),
        description: c.description.clone(),
    };
    Ok(Decision::one(AggRef::plugin(id), event))
}

fn wrong_state(p: &Plugin, action: &str, allowed: &str) -> DomainError {
    DomainError::InvalidState(format!(
        "plugin {} is {}: only {allowed} plugins can be {action}",
        p.reference(),
        p.status.as_str()
    ))
}

/// `plugin.deprecate`: only from active.
pub(crate) fn deprecate(c: &DeprecatePlugin, loaded: &Loaded) -> Result<Decision, DomainError> {
    let p = load(c.plugin_id, loaded)?;
    if p.status != PluginStatus::Active {
        return Err(wrong_state(p, "deprecated", "active"));
    }
    Ok(Decision::one(
        AggRef::plugin(p.id),
        PluginDeprecated {
            reason: c.reason.clone(),
        },
    ))
}

/// `plugin.disable`: from active or deprecated.
pub(crate) fn disable(c: &DisablePlugin, loaded: &Loaded) -> Result<Decision, DomainError> {
    let p = load(c.plugin_id, loaded)?;
    if p.status == PluginStatus::Disabled {
        return Err(wrong_state(p, "disabled", "active or deprecated"));
    }
    Ok(Decision::one(
        AggRef::plugin(p.id),
        PluginDisabled {
            reason: c.reason.clone(),
        },
    ))
}

/// `plugin.enable`: from deprecated or disabled.
pub(crate) fn enable(c: &EnablePlugin, loaded: &Loaded) -> Result<Decision, DomainError> {
    let p = load(c.plugin_id, loaded)?;
    if p.status == PluginStatus::Active {
        return Err(wrong_state(p, "enabled", "deprecated or disabled"));
    }
    Ok(Decision::one(AggRef::plugin(p.id), PluginEnabled {}))
}
