use flexcore_contracts::events::PipelineEvent;
use flexcore_contracts::lifecycle::PipelineStatus;
use flexcore_contracts::views::PipelineView;
use flexcore_eventstore::RecordedEvent;
use uuid::Uuid;

use super::{status, typed};
use crate::projection::Entity;
use crate::tables::TableSpec;

impl Entity for PipelineView {
    const SPEC: TableSpec = TableSpec {
        base: "pipelines",
        key: "pipeline_id",
        columns: &[
            ("pipeline_id", "uuid NOT NULL"),
            ("name", "text NOT NULL"),
            ("owner", "text NOT NULL"),
            ("state", "text NOT NULL"),
            ("created_at", "timestamptz NOT NULL"),
            ("updated_at", "timestamptz NOT NULL"),
            ("doc", "json NOT NULL"),
        ],
        indexes: &[
            "(name, pipeline_id)",
            "(created_at, pipeline_id)",
            "(updated_at, pipeline_id)",
            "(owner)",
            "(state)",
        ],
        counts: true,
        minutes: false,
        // What a pipeline shows of other aggregates, kept on its row so that lists and
        // gets read one row per pipeline (`crate::derived`): its latest run, and the
        // specs of its active schedules (a JSON array, null without any).
        derived: &[
            ("last_run_id", "uuid"),
            ("last_run_state", "text"),
            ("last_run_requested_at", "timestamptz"),
            ("last_run_finished_at", "timestamptz"),
            ("schedule_specs", "text"),
        ],
    };
    const AGGREGATE: &'static str = PipelineEvent::AGGREGATE_TYPE;

    fn create(event: &RecordedEvent) -> Result<Self, String> {
        let first = typed(event, PipelineEvent::from_stored)?;
        let (Some(state), PipelineEvent::Created(e)) = (PipelineStatus::initial(&first), first) else {
            return Err("the first pipeline event must be pipeline.created".into());
        };
        Ok(PipelineView {
            pipeline_id: e.pipeline_id,
            name: e.name.to_string(),
            owner: e.owner.to_string(),
            description: e.description,
            tags: e.tags.iter().map(ToString::to_string).collect(),
            state: state.as_str().into(),
            state_reason: None,
            definition_version: 1,
            definition: e.definition,
            bookmark: flexcore_contracts::OpaqueJson::null(),
            bookmark_run_id: None,
            bookmark_at: None,
            last_run: None,
            next_fire: None,
            created_at: event.recorded_at,
            updated_at: event.recorded_at,
            aggregate_version: event.version,
        })
    }

    fn apply(&mut self, event: &RecordedEvent) -> Result<(), String> {
        let typed = typed(event, PipelineEvent::from_stored)?;
        let state = status::<PipelineStatus>(&self.state)?.after(&typed);
        match typed {
            PipelineEvent::Created(_) => return Err("pipeline created twice".into()),
            PipelineEvent::Updated(e) => {
                self.definition_version = e.definition_version;
                self.definition = e.definition;
                self.owner = e.owner.to_string();
                self.description = e.description;
                self.tags = e.tags.iter().map(ToString::to_string).collect();
            }
            PipelineEvent::Paused(e) => self.state_reason = e.reason,
            PipelineEvent::Resumed(_) => self.state_reason = None,
            PipelineEvent::Archived(e) => self.state_reason = e.reason,
            PipelineEvent::StateCommitted(e) => {
                self.bookmark = e.state;
                self.bookmark_run_id = e.run_id;
                self.bookmark_at = Some(event.recorded_at);
            }
        }
        self.state = state.as_str().into();
        self.updated_at = event.recorded_at;
        self.aggregate_version = event.version;
        Ok(())
    }

    fn id(&self) -> Uuid {
        self.pipeline_id
    }

    fn state(&self) -> &str {
        &self.state
    }

    fn aggregate_version(&self) -> u64 {
        self.aggregate_version
    }
}
