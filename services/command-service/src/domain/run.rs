//! The Run aggregate: one execution of a pinned pipeline definition, attempt by attempt.
//! The attempt number is the fencing token: a runner acting for an older attempt is
//! refused with a `conflict`, so a runner that lost its lease cannot overwrite a newer one.

use chrono::{DateTime, Utc};
use flexcore_contracts::commands::{
    CancelRun, CheckpointRun, ClaimRun, FailRun, RequestRun, RetryRun, SucceedRun, TimeOutRun,
};
use flexcore_contracts::events::{
    PipelineStateCommitted, RunCancelled, RunCheckpointed, RunClaimed, RunEvent, RunFailed, RunRetried, RunSucceeded,
    RunTimedOut,
};
use flexcore_contracts::model::{PipelineDefinition, RunError, RunTrigger, StreamCounters, TimeoutReason};
use flexcore_contracts::values::{Label, PipelineName};
use flexcore_contracts::{ErrorReason, OpaqueJson};
use uuid::Uuid;

use super::pipeline::PipelineStatus;
use super::plugin::PluginStatus;
use super::schedule::ScheduleStatus;
use super::{AggRef, Aggregate, Constraints, Decision, DomainError, Loaded, Pipeline, SlotClaim};

pub use flexcore_contracts::lifecycle::RunStatus;

/// A run.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Id.
    pub id: Uuid,
    /// The pipeline.
    pub pipeline_id: Uuid,
    /// The pipeline's name when requested.
    pub pipeline_name: PipelineName,
    /// Pinned definition version.
    pub definition_version: u32,
    /// Pinned definition: later pipeline updates do not affect this run.
    pub definition: PipelineDefinition,
    /// What started it.
    pub trigger: RunTrigger,
    /// The schedule that fired it.
    pub schedule_id: Option<Uuid>,
    /// The slot it was fired for.
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Current attempt number (1-based; the fencing token).
    pub attempt: u32,
    /// Where it is.
    pub status: RunStatus,
    /// The runner holding the current attempt (while running).
    pub runner_id: Option<Label>,
    /// The bookmark the current attempt resumed from.
    pub resume_state: OpaqueJson,
    /// Last checkpointed STATE (`null` before the first checkpoint).
    pub last_state: OpaqueJson,
    /// Records per stream reported last (reset when an attempt is claimed).
    pub counters: StreamCounters,
    /// The last attempt's failure.
    pub last_error: Option<RunError>,
    /// Why the last attempt timed out.
    pub timeout_reason: Option<TimeoutReason>,
}

impl Aggregate for Run {
    fn create(event: &RunEvent) -> Result<Self, DomainError> {
        let (Some(status), RunEvent::Requested(e)) = (RunStatus::initial(event), event) else {
            return Err(DomainError::Corrupt(format!(
                "the first run event must be run.requested, not {}",
                event.event_type()
            )));
        };
        Ok(Self {
            id: e.run_id,
            pipeline_id: e.pipeline_id,
            pipeline_name: e.pipeline_name.clone(),
            definition_version: e.definition_version,
            definition: e.definition.clone(),
            trigger: e.trigger,
            schedule_id: e.schedule_id,
            scheduled_for: e.scheduled_for,
            attempt: e.attempt,
            status,
            runner_id: None,
            resume_state: OpaqueJson::null(),
            last_state: OpaqueJson::null(),
            counters: StreamCounters::new(),
            last_error: None,
            timeout_reason: None,
        })
    }

    fn apply(&mut self, event: &RunEvent) -> Result<(), DomainError> {
        match event {
            RunEvent::Requested(_) => return Err(DomainError::Corrupt(format!("run {} is requested twice", self.id))),
            RunEvent::Claimed(e) => {
                self.attempt = e.attempt;
                self.runner_id = Some(e.runner_id.clone());
                self.resume_state = e.resume_state.clone();
                self.counters.clear();
            }
            RunEvent::Checkpointed(e) => {
                self.last_state = e.state.clone();
                self.counters = e.counters.clone();
            }
            RunEvent::Succeeded(e) => {
                self.counters = e.counters.clone();
                self.runner_id = None;
            }
            RunEvent::Failed(e) => {
                self.last_error = Some(e.error.clone());
                self.counters = e.counters.clone();
                self.runner_id = None;
            }
            RunEvent::Retried(e) => {
                self.attempt = e.attempt;
                self.runner_id = None;
            }
            RunEvent::Cancelled(_) => self.runner_id = None,
            RunEvent::TimedOut(e) => {
                self.timeout_reason = Some(e.reason);
                self.runner_id = None;
            }
        }
        self.status = self.status.after(event);
        Ok(())
    }
}

impl Run {
    fn agg(&self) -> AggRef {
        AggRef::run(self.id)
    }

    /// The slot the run holds in its pipeline's pool (for release).
    fn slot(&self) -> SlotClaim {
        SlotClaim {
            pool: self.pipeline_id,
            holder: self.id,
            max: self.definition.max_active_runs,
        }
    }

    fn release(&self) -> Constraints {
        Constraints {
            release_slot: Some(self.slot()),
            ..Constraints::default()
        }
    }

    /// Refuses a runner acting for another attempt than the current one.
    fn check_attempt(&self, attempt: u32) -> Result<(), DomainError> {
        if attempt != self.attempt {
            return Err(DomainError::conflict(
                ErrorReason::StaleAttempt,
                format!(
                    "attempt {attempt} of run {} is stale: the current attempt is {}; stop working on it",
                    self.id, self.attempt
                ),
            )
            .with("current_attempt", self.attempt));
        }
        Ok(())
    }

    /// Refuses the command unless the run is in one of `allowed`.
    fn check_status(&self, allowed: &[RunStatus], action: &str) -> Result<(), DomainError> {
        if allowed.contains(&self.status) {
            return Ok(());
        }
        Err(DomainError::InvalidState(if self.status.is_terminal() {
            format!(
                "run {} is already {}: it accepts no further commands",
                self.id,
                self.status.as_str()
            )
        } else {
            let allowed: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
            format!(
                "run {} is {} (attempt {}): only runs that are {} can be {action}",
                self.id,
                self.status.as_str(),
                self.attempt,
                allowed.join(" or ")
            )
        }))
    }

    fn is_last_attempt(&self) -> bool {
        self.attempt >= self.definition.retry.max_attempts
    }
}

fn load(id: Uuid, loaded: &Loaded) -> Result<&Run, DomainError> {
    loaded
        .run(id)
        .ok_or_else(|| DomainError::NotFound(format!("run {id} does not exist")))
}

fn load_pipeline(id: Uuid, loaded: &Loaded) -> Result<&Pipeline, DomainError> {
    loaded
        .pipeline(id)
        .ok_or_else(|| DomainError::NotFound(format!("pipeline {id} does not exist")))
}

/// `run.request`: pins the pipeline's current definition and takes one of its
/// `max_active_runs` slots (the store refuses when the pool is full).
pub(crate) fn request(id: Uuid, c: &RequestRun, loaded: &Loaded) -> Result<Decision, DomainError> {
    if let Some(r) = loaded.run(id) {
        return Err(DomainError::conflict(
            ErrorReason::Exists,
            format!(
                "run {id} already exists (it is {}); omit run_id to request a new run",
                r.status.as_str()
            ),
        )
        .with("run_id", id.to_string()));
    }
    let p = load_pipeline(c.pipeline_id, loaded)?;
    check_slot(id, c, p.id, loaded)?;
    match p.status {
        PipelineStatus::Active => {}
        PipelineStatus::Paused => {
            return Err(DomainError::InvalidState(format!(
                "pipeline {} is paused: resume it before requesting runs",
                p.name
            )))
        }
        PipelineStatus::Archived => {
            return Err(DomainError::InvalidState(format!(
                "pipeline {} is archived: it runs no more",
                p.name
            )))
        }
    }
    for (i, step) in p.definition.steps.iter().enumerate() {
        let plugin = loaded.plugin(step.plugin_id).ok_or_else(|| {
            DomainError::NotFound(format!(
                "step {i}: plugin {} of pipeline {} is not registered",
                step.plugin, p.name
            ))
        })?;
        if plugin.status == PluginStatus::Disabled {
            return Err(DomainError::InvalidState(format!(
                "step {i}: plugin {} of pipeline {} is disabled: enable it or update the pipeline to another version",
                step.plugin, p.name
            )));
        }
    }
    let event = flexcore_contracts::events::RunRequested {
        run_id: id,
        pipeline_id: p.id,
        pipeline_name: p.name.clone(),
        definition_version: p.definition_version,
        definition: p.definition.clone(),
        trigger: c.trigger,
        schedule_id: c.schedule_id,
        scheduled_for: c.scheduled_for,
        attempt: 1,
    };
    let slot = SlotClaim {
        pool: p.id,
        holder: id,
        max: p.definition.max_active_runs,
    };
    // The scheduler's run of a slot excludes a skip of it (see schedule::slot_key).
    let claim_unique = match (c.trigger, c.schedule_id, c.scheduled_for) {
        (RunTrigger::Schedule, Some(schedule_id), Some(at)) => vec![super::schedule::slot_key(schedule_id, at, id)],
        _ => Vec::new(),
    };
    Ok(Decision::one(AggRef::run(id), event).with(Constraints {
        acquire_slot: Some(slot),
        claim_unique,
        ..Constraints::default()
    }))
}

/// A scheduled or backfilled run names its schedule and slot (the schema makes them go
/// together), the schedule runs this pipeline, and the run's id is the one derived from
/// them (so every replica and every backfill of a slot address one run).
fn check_slot(id: Uuid, c: &RequestRun, pipeline_id: Uuid, loaded: &Loaded) -> Result<(), DomainError> {
    let (Some(schedule_id), Some(slot)) = (c.schedule_id, c.scheduled_for) else {
        return Ok(());
    };
    let schedule = loaded
        .schedule(schedule_id)
        .ok_or_else(|| DomainError::NotFound(format!("schedule {schedule_id} does not exist")))?;
    if schedule.pipeline_id != pipeline_id {
        return Err(DomainError::validation(
            ErrorReason::Mismatch,
            "/pipeline_id",
            format!(
                "schedule {schedule_id} runs pipeline {}, not {pipeline_id}",
                schedule.pipeline_id
            ),
        ));
    }
    if schedule.status == ScheduleStatus::Deleted {
        return Err(DomainError::InvalidState(format!(
            "schedule {schedule_id} is deleted: it requests no more runs"
        )));
    }
    let derived = flexcore_contracts::ids::scheduled_run_id(schedule_id, slot);
    if id != derived {
        return Err(DomainError::validation(
            ErrorReason::Mismatch,
            "/run_id",
            format!("the run of slot {slot} of schedule {schedule_id} has id {derived}; omit run_id or give that one"),
        )
        .with("expected", derived.to_string()));
    }
    Ok(())
}

/// `run.claim`: a runner takes the pending attempt and resumes from the pipeline's bookmark.
pub(crate) fn claim(c: &ClaimRun, loaded: &Loaded) -> Result<Decision, DomainError> {
    let r = load(c.run_id, loaded)?;
    r.check_attempt(c.attempt)?;
    r.check_status(&[RunStatus::Requested], "claimed")?;
    let p = load_pipeline(r.pipeline_id, loaded)?;
    let event = RunClaimed {
        attempt: c.attempt,
        runner_id: c.runner_id.clone(),
        lease_seconds: c.lease_seconds,
        resume_state: p.bookmark.clone(),
    };
    Ok(Decision::one(r.agg(), event))
}

/// `run.checkpoint`: commits the STATE to the run and, in the same append, to the
/// pipeline's bookmark, so a crash after it never replays committed records.
pub(crate) fn checkpoint(c: &CheckpointRun, loaded: &Loaded) -> Result<Decision, DomainError> {
    let r = load(c.run_id, loaded)?;
    r.check_attempt(c.attempt)?;
    r.check_status(&[RunStatus::Running], "checkpointed")?;
    let p = load_pipeline(r.pipeline_id, loaded)?;
    let event = RunCheckpointed {
        attempt: c.attempt,
        state: c.state.clone(),
        counters: c.counters.clone(),
    };
    let commit = PipelineStateCommitted {
        state: c.state.clone(),
        run_id: Some(r.id),
    };
    Ok(Decision::one(r.agg(), event).and(AggRef::pipeline(p.id), commit))
}

/// `run.succeed`: final; frees the slot.
pub(crate) fn succeed(c: &SucceedRun, loaded: &Loaded) -> Result<Decision, DomainError> {
    let r = load(c.run_id, loaded)?;
    r.check_attempt(c.attempt)?;
    r.check_status(&[RunStatus::Running], "succeeded")?;
    Ok(Decision::one(
        r.agg(),
        RunSucceeded {
            attempt: c.attempt,
            counters: c.counters.clone(),
        },
    )
    .with(r.release()))
}

/// `run.fail`: final when not retryable or on the last attempt (then the slot is freed);
/// otherwise the run awaits a retry and keeps its slot.
pub(crate) fn fail(c: &FailRun, loaded: &Loaded) -> Result<Decision, DomainError> {
    let r = load(c.run_id, loaded)?;
    r.check_attempt(c.attempt)?;
    r.check_status(&[RunStatus::Running], "failed")?;
    let is_final = !c.retryable || r.is_last_attempt();
    let event = RunFailed {
        attempt: c.attempt,
        error: c.error.clone(),
        retryable: c.retryable,
        is_final,
        counters: c.counters.clone(),
    };
    let decision = Decision::one(r.agg(), event);
    Ok(if is_final { decision.with(r.release()) } else { decision })
}

/// `run.retry`: starts the next attempt; `failed_attempt` makes a second scheduler's retry
/// of the same failure a `conflict` instead of skipping an attempt.
pub(crate) fn retry(c: &RetryRun, loaded: &Loaded) -> Result<Decision, DomainError> {
    let r = load(c.run_id, loaded)?;
    r.check_attempt(c.failed_attempt)?;
    r.check_status(&[RunStatus::AwaitingRetry], "retried")?;
    Ok(Decision::one(
        r.agg(),
        RunRetried {
            attempt: r.attempt + 1,
            pipeline_id: r.pipeline_id,
        },
    ))
}

/// `run.cancel`: final from any non-terminal state; frees the slot.
pub(crate) fn cancel(c: &CancelRun, loaded: &Loaded) -> Result<Decision, DomainError> {
    let r = load(c.run_id, loaded)?;
    r.check_status(
        &[RunStatus::Requested, RunStatus::Running, RunStatus::AwaitingRetry],
        "cancelled",
    )?;
    Ok(Decision::one(
        r.agg(),
        RunCancelled {
            attempt: r.attempt,
            reason: c.reason.clone(),
        },
    )
    .with(r.release()))
}

/// `run.time_out`: a lost lease (only while running) is retried unless attempts are
/// exhausted; a run timeout is always final.
pub(crate) fn time_out(c: &TimeOutRun, loaded: &Loaded) -> Result<Decision, DomainError> {
    let r = load(c.run_id, loaded)?;
    r.check_attempt(c.attempt)?;
    match c.reason {
        TimeoutReason::LeaseExpired => r.check_status(&[RunStatus::Running], "timed out for a lost lease")?,
        TimeoutReason::RunTimeout => r.check_status(
            &[RunStatus::Requested, RunStatus::Running, RunStatus::AwaitingRetry],
            "timed out",
        )?,
    }
    let is_final = c.reason == TimeoutReason::RunTimeout || r.is_last_attempt();
    let decision = Decision::one(
        r.agg(),
        RunTimedOut {
            attempt: c.attempt,
            reason: c.reason,
            is_final,
        },
    );
    Ok(if is_final { decision.with(r.release()) } else { decision })
}
