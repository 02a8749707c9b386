use flexcore_contracts::events::PluginEvent;
use flexcore_contracts::lifecycle::PluginStatus;
use flexcore_contracts::views::PluginView;
use flexcore_eventstore::RecordedEvent;
use uuid::Uuid;

use super::{status, typed};
use crate::projection::Entity;
use crate::tables::TableSpec;

impl Entity for PluginView {
    const SPEC: TableSpec = TableSpec {
        base: "plugins",
        key: "plugin_id",
        columns: &[
            ("plugin_id", "uuid NOT NULL"),
            ("name", "text NOT NULL"),
            ("version", "text NOT NULL"),
            ("kind", "text NOT NULL"),
            ("state", "text NOT NULL"),
            ("created_at", "timestamptz NOT NULL"),
            ("updated_at", "timestamptz NOT NULL"),
            ("doc", "json NOT NULL"),
        ],
        indexes: &[
            "(name, plugin_id)",
            "(created_at, plugin_id)",
            "(updated_at, plugin_id)",
            "(state)",
            "(kind)",
        ],
        counts: true,
        minutes: false,
        derived: &[],
    };
    const AGGREGATE: &'static str = PluginEvent::AGGREGATE_TYPE;

    fn create(event: &RecordedEvent) -> Result<Self, String> {
        let first = typed(event, PluginEvent::from_stored)?;
        let (Some(state), PluginEvent::Registered(e)) = (PluginStatus::initial(&first), first) else {
            return Err("the first plugin event must be plugin.registered".into());
        };
        Ok(PluginView {
            plugin_id: e.plugin_id,
            name: e.name.to_string(),
            version: e.version.to_string(),
            kind: e.kind,
            runtime: e.runtime,
            state: state.as_str().into(),
            state_reason: None,
            module_digest: e.module_digest.map(|d| d.to_string()),
            executable: e.executable,
            config_schema: e.config_schema,
            limits: e.limits,
            grants: e.grants,
            description: e.description,
            created_at: event.recorded_at,
            updated_at: event.recorded_at,
            aggregate_version: event.version,
        })
    }

    fn apply(&mut self, event: &RecordedEvent) -> Result<(), String> {
        let typed = typed(event, PluginEvent::from_stored)?;
        let state = status::<PluginStatus>(&self.state)?.after(&typed);
        self.state_reason = match typed {
            PluginEvent::Registered(_) => return Err("plugin registered twice".into()),
            PluginEvent::Deprecated(e) => e.reason,
            PluginEvent::Disabled(e) => e.reason,
            PluginEvent::Enabled(_) => None,
        };
        self.state = state.as_str().into();
        self.updated_at = event.recorded_at;
        self.aggregate_version = event.version;
        Ok(())
    }

    fn id(&self) -> Uuid {
        self.plugin_id
    }

    fn state(&self) -> &str {
        &self.state
    }

    fn aggregate_version(&self) -> u64 {
        self.aggregate_version
    }
}
