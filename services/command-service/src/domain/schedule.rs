//! The Schedule aggregate: a cron expression in a time zone that fires runs of a pipeline.
//! Firing itself is the scheduler's job; this aggregate keeps the spec and records slots
//! that were skipped or missed, so they are visible in the log.

use flexcore_contracts::commands::{
    CreateSchedule, DeleteSchedule, MissSlots, PauseSchedule, ResumeSchedule, SkipSlot, UpdateSchedule,
};
use flexcore_contracts::events::{
    ScheduleCreated, ScheduleDeleted, ScheduleEvent, SchedulePaused, ScheduleResumed, ScheduleSlotSkipped,
    ScheduleSlotsMissed, ScheduleUpdated,
};
use flexcore_contracts::model::ScheduleSpec;
use flexcore_contracts::ErrorReason;
use uuid::Uuid;

use super::pipeline::PipelineStatus;
use super::{validation, AggRef, Aggregate, Constraints, Decision, DomainError, Loaded, UniqueKey};

pub use flexcore_contracts::lifecycle::ScheduleStatus;

/// A schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Id.
    pub id: Uuid,
    /// The pipeline it runs.
    pub pipeline_id: Uuid,
    /// Timing and policies.
    pub spec: ScheduleSpec,
    /// Lifecycle state.
    pub status: ScheduleStatus,
    /// Slots recorded as skipped so far.
    pub skipped_slots: u64,
    /// Slots recorded as missed so far.
    pub missed_slots: u64,
}

impl Aggregate for Schedule {
    fn create(event: &ScheduleEvent) -> Result<Self, DomainError> {
        let (Some(status), ScheduleEvent::Created(e)) = (ScheduleStatus::initial(event), event) else {
            return Err(DomainError::Corrupt(format!(
                "the first schedule event must be schedule.created, not {}",
                event.event_type()
            )));
        };
        Ok(Self {
            id: e.schedule_id,
            pipeline_id: e.pipeline_id,
            spec: e.spec.clone(),
            status,
            skipped_slots: 0,
            missed_slots: 0,
        })
    }

    fn apply(&mut self, event: &ScheduleEvent) -> Result<(), DomainError> {
        match event {
            ScheduleEvent::Created(_) => {
                return Err(DomainError::Corrupt(format!("schedule {} is created twice", self.id)))
            }
            ScheduleEvent::Updated(e) => self.spec = e.spec.clone(),
            ScheduleEvent::Paused(_) | ScheduleEvent::Resumed(_) | ScheduleEvent::Deleted(_) => {}
            ScheduleEvent::SlotSkipped(_) => self.skipped_slots += 1,
            ScheduleEvent::SlotsMissed(e) => self.missed_slots += e.slots.len() as u64,
        }
        self.status = self.status.after(event);
        Ok(())
    }
}

impl Schedule {
    fn agg(&self) -> AggRef {
        AggRef::schedule(self.id)
    }

    fn not_deleted(&self, action: &str) -> Result<(), DomainError> {
        if self.status == ScheduleStatus::Deleted {
            return Err(DomainError::InvalidState(format!(
                "schedule {} is deleted: it cannot be {action}; create a new one",
                self.id
            )));
        }
        Ok(())
    }
}

fn load(id: Uuid, loaded: &Loaded) -> Result<&Schedule, DomainError> {
    loaded
        .schedule(id)
        .ok_or_else(|| DomainError::NotFound(format!("schedule {id} does not exist")))
}

/// `schedule.create`: a paused pipeline may get schedules (their slots are skipped); an
/// archived one may not.
pub(crate) fn create(id: Uuid, c: &CreateSchedule, loaded: &Loaded) -> Result<Decision, DomainError> {
    if loaded.schedule(id).is_some() {
        return Err(DomainError::conflict(
            ErrorReason::Exists,
            format!("schedule {id} already exists; omit schedule_id to create a new one"),
        )
        .with("schedule_id", id.to_string()));
    }
    let p = loaded
        .pipeline(c.pipeline_id)
        .ok_or_else(|| DomainError::NotFound(format!("pipeline {} does not exist", c.pipeline_id)))?;
    if p.status == PipelineStatus::Archived {
        return Err(DomainError::InvalidState(format!(
            "pipeline {} is archived: it cannot be scheduled",
            p.name
        )));
    }
    let spec = c.spec();
    validation::check_schedule_spec(&spec)?;
    Ok(Decision::one(
        AggRef::schedule(id),
        ScheduleCreated {
            schedule_id: id,
            pipeline_id: p.id,
            spec,
            paused: c.paused,
        },
    ))
}

/// `schedule.update`: merges the given fields into the spec and checks the result as a
/// whole (a new `end_at` must still be after the old `start_at`).
pub(crate) fn update(c: &UpdateSchedule, loaded: &Loaded) -> Result<Decision, DomainError> {
    let s = load(c.schedule_id, loaded)?;
    s.not_deleted("updated")?;
    // At least one field is given (the schema's rule).
    let old = &s.spec;
    let spec = ScheduleSpec {
        cron: c.cron.clone().unwrap_or_else(|| old.cron.clone()),
        timezone: c.timezone.clone().unwrap_or_else(|| old.timezone.clone()),
        overlap: c.overlap.unwrap_or(old.overlap),
        catchup_window_seconds: c.catchup_window_seconds.unwrap_or(old.catchup_window_seconds),
        catchup_cap: c.catchup_cap.unwrap_or(old.catchup_cap),
        jitter_seconds: c.jitter_seconds.unwrap_or(old.jitter_seconds),
        start_at: c.start_at.or(old.start_at),
        end_at: c.end_at.or(old.end_at),
    };
    validation::check_schedule_spec(&spec)?;
    Ok(Decision::one(s.agg(), ScheduleUpdated { spec }))
}

/// `schedule.pause`: only an active schedule.
pub(crate) fn pause(c: &PauseSchedule, loaded: &Loaded) -> Result<Decision, DomainError> {
    let s = load(c.schedule_id, loaded)?;
    s.not_deleted("paused")?;
    if s.status != ScheduleStatus::Active {
        return Err(DomainError::InvalidState(format!(
            "schedule {id} is already paused; resume it: `flexctl schedule resume {id}` \
             or POST /api/v1/flexcore/schedules/{id}/resume",
            id = s.id
        )));
    }
    Ok(Decision::one(
        s.agg(),
        SchedulePaused {
            reason: c.reason.clone(),
        },
    ))
}

/// `schedule.resume`: only a paused schedule.
pub(crate) fn resume(c: &ResumeSchedule, loaded: &Loaded) -> Result<Decision, DomainError> {
    let s = load(c.schedule_id, loaded)?;
    s.not_deleted("resumed")?;
    if s.status != ScheduleStatus::Paused {
        return Err(DomainError::InvalidState(format!(
            "schedule {} is active, not paused: there is nothing to resume",
            s.id
        )));
    }
    Ok(Decision::one(s.agg(), ScheduleResumed {}))
}

/// `schedule.delete`: final.
pub(crate) fn delete(c: &DeleteSchedule, loaded: &Loaded) -> Result<Decision, DomainError> {
    let s = load(c.schedule_id, loaded)?;
    if s.status == ScheduleStatus::Deleted {
        return Err(DomainError::InvalidState(format!(
            "schedule {} is already deleted",
            s.id
        )));
    }
    Ok(Decision::one(s.agg(), ScheduleDeleted {}))
}

/// `schedule.skip_slot`: records a slot the scheduler did not fire, and why; refused when
/// the slot's run exists (another replica fired it), so a slot never has both outcomes.
pub(crate) fn skip_slot(c: &SkipSlot, loaded: &Loaded) -> Result<Decision, DomainError> {
    let s = load(c.schedule_id, loaded)?;
    s.not_deleted("given skipped slots")?;
    let run_id = flexcore_contracts::ids::scheduled_run_id(s.id, c.slot);
    if loaded.run(run_id).is_some() {
        return Err(DomainError::conflict(
            ErrorReason::SlotFired,
            format!(
                "slot {} of schedule {} was fired (run {run_id}): it cannot be skipped",
                c.slot, s.id
            ),
        )
        .with("run_id", run_id.to_string()));
    }
    Ok(Decision::one(
        s.agg(),
        ScheduleSlotSkipped {
            slot: c.slot,
            reason: c.reason.to_string(),
        },
    )
    .with(Constraints {
        claim_unique: vec![slot_key(s.id, c.slot, s.id)],
        ..Constraints::default()
    }))
}

/// The unique-key scope of a schedule's slot outcomes.
pub const SLOT_SCOPE: &str = "schedule_slot";

/// The key a slot's outcome takes: held by the schedule for a skip, by the run for the
/// scheduler's run. A scheduled `run.request` and a `schedule.skip_slot` of one slot, sent
/// at once by two scheduler replicas that see the log differently (one has not yet read
/// the other's outcome) and committed by two command-service replicas, cannot both
/// commit: the skip's check that the slot's run does not exist reads another aggregate,
/// which nothing fences; the key does (found by the cluster fault test). A backfill's run
/// takes no key: backfilling a skipped slot is what backfill is for.
pub(crate) fn slot_key(schedule_id: Uuid, slot: chrono::DateTime<chrono::Utc>, owner: Uuid) -> UniqueKey {
    UniqueKey {
        scope: SLOT_SCOPE.to_owned(),
        key: format!(
            "{schedule_id}/{}",
            slot.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        ),
        owner,
    }
}

/// `schedule.miss_slots`: records slots that fell outside the catch-up window or cap.
pub(crate) fn miss_slots(c: &MissSlots, loaded: &Loaded) -> Result<Decision, DomainError> {
    let s = load(c.schedule_id, loaded)?;
    s.not_deleted("given missed slots")?;
    Ok(Decision::one(s.agg(), ScheduleSlotsMissed { slots: c.slots.clone() }))
}
