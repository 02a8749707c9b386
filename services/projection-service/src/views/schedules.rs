use flexcore_contracts::events::ScheduleEvent;
use flexcore_contracts::lifecycle::ScheduleStatus;
use flexcore_contracts::views::{ScheduleView, SkippedSlot};
use flexcore_eventstore::RecordedEvent;
use uuid::Uuid;

use super::{status, typed};
use crate::projection::Entity;
use crate::tables::TableSpec;

impl Entity for ScheduleView {
    const SPEC: TableSpec = TableSpec {
        base: "schedules",
        key: "schedule_id",
        columns: &[
            ("schedule_id", "uuid NOT NULL"),
            ("pipeline_id", "uuid NOT NULL"),
            ("state", "text NOT NULL"),
            ("created_at", "timestamptz NOT NULL"),
            ("updated_at", "timestamptz NOT NULL"),
            ("doc", "json NOT NULL"),
        ],
        indexes: &[
            "(pipeline_id)",
            "(created_at, schedule_id)",
            "(updated_at, schedule_id)",
            "(state)",
        ],
        counts: true,
        minutes: false,
        derived: &[],
    };
    const AGGREGATE: &'static str = ScheduleEvent::AGGREGATE_TYPE;

    fn create(event: &RecordedEvent) -> Result<Self, String> {
        let first = typed(event, ScheduleEvent::from_stored)?;
        let (Some(state), ScheduleEvent::Created(e)) = (ScheduleStatus::initial(&first), first) else {
            return Err("the first schedule event must be schedule.created".into());
        };
        Ok(ScheduleView {
            schedule_id: e.schedule_id,
            pipeline_id: e.pipeline_id,
            // Added at query time, from the pipelines view.
            pipeline_name: None,
            spec: e.spec,
            state: state.as_str().into(),
            slots_skipped: 0,
            last_skipped: None,
            slots_missed: 0,
            last_missed: None,
            next_fire: None,
            created_at: event.recorded_at,
            updated_at: event.recorded_at,
            aggregate_version: event.version,
        })
    }

    fn apply(&mut self, event: &RecordedEvent) -> Result<(), String> {
        let typed = typed(event, ScheduleEvent::from_stored)?;
        let state = status::<ScheduleStatus>(&self.state)?.after(&typed);
        match typed {
            ScheduleEvent::Created(_) => return Err("schedule created twice".into()),
            ScheduleEvent::Updated(e) => self.spec = e.spec,
            ScheduleEvent::Paused(_) | ScheduleEvent::Resumed(_) | ScheduleEvent::Deleted(_) => {}
            ScheduleEvent::SlotSkipped(e) => {
                self.slots_skipped += 1;
                self.last_skipped = Some(SkippedSlot {
                    slot: e.slot,
                    reason: e.reason,
                });
            }
            ScheduleEvent::SlotsMissed(e) => {
                self.slots_missed += e.slots.len() as u64;
                self.last_missed = e.slots.iter().copied().max().max(self.last_missed);
            }
        }
        self.state = state.as_str().into();
        self.updated_at = event.recorded_at;
        self.aggregate_version = event.version;
        Ok(())
    }

    fn id(&self) -> Uuid {
        self.schedule_id
    }

    fn state(&self) -> &str {
        &self.state
    }

    fn aggregate_version(&self) -> u64 {
        self.aggregate_version
    }
}
