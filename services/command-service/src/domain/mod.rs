//! The aggregates (Plugin, Pipeline, Run, Schedule) as pure functions: no I/O, no async.
//!
//! # Layout
//! - this file: the aggregate-independent API the service glue calls: [`target`] (fill
//!   generated ids), [`required`] (what to load), [`decide`] (command → events plus store
//!   constraints) and [`AggregateState::evolve`] (fold one event).
//! - `any`: the [`Aggregate`] trait (create from the first event, apply the later ones)
//!   and the wrappers generated from the list of aggregates: [`AggregateType`],
//!   [`AnyEvent`], [`AggregateState`].
//! - [`plugin`], [`pipeline`], [`run`], [`schedule`]: one file per aggregate with its state,
//!   its `impl Aggregate` (only mutates) and its command handlers (decide, never mutate).
//!   Lifecycle states and how events move them are the contracts'
//!   ([`flexcore_contracts::lifecycle`]), shared with the projections and the scheduler.
//! - [`validation`] holds checks shared by handlers: step configs against JSON Schemas,
//!   secret references, cron expressions and time zones.
//! - [`error`] holds [`DomainError`], one variant per reply error code.
//!
//! Uniqueness (pipeline names) and concurrency slots (max active runs) span aggregates, so
//! the domain cannot check them on loaded state: it states them as [`Constraints`] that the
//! event store enforces in the same transaction as the append.

pub mod error;
pub mod pipeline;
pub mod plugin;
pub mod run;
pub mod schedule;
pub mod validation;

mod any;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use flexcore_contracts::commands::Command;
use uuid::Uuid;

pub use any::{Aggregate, AggregateState, AggregateType, AnyEvent, Member};
pub use error::DomainError;
pub use pipeline::Pipeline;
pub use plugin::Plugin;
pub use run::Run;
pub use schedule::Schedule;

/// The address of one aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AggRef {
    /// Its type.
    pub kind: AggregateType,
    /// Its id.
    pub id: Uuid,
}

impl AggRef {
    /// A plugin.
    pub fn plugin(id: Uuid) -> Self {
        Self {
            kind: AggregateType::Plugin,
            id,
        }
    }
    /// A pipeline.
    pub fn pipeline(id: Uuid) -> Self {
        Self {
            kind: AggregateType::Pipeline,
            id,
        }
    }
    /// A run.
    pub fn run(id: Uuid) -> Self {
        Self {
            kind: AggregateType::Run,
            id,
        }
    }
    /// A schedule.
    pub fn schedule(id: Uuid) -> Self {
        Self {
            kind: AggregateType::Schedule,
            id,
        }
    }
}

/// A folded state and the version of the last event folded into it.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    /// Version of the last event (1 after the first).
    pub version: u64,
    /// The state.
    pub state: AggregateState,
}

/// The aggregates loaded for one decision. An id that is absent does not exist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    /// Loaded aggregates by id.
    pub states: HashMap<Uuid, Versioned>,
}

impl Loaded {
    /// The aggregate `id` of type `A`, if loaded.
    pub fn get<A: Aggregate>(&self, id: Uuid) -> Option<&A> {
        self.states.get(&id).and_then(|v| A::state_ref(&v.state))
    }
    /// The plugin `id`, if loaded.
    pub fn plugin(&self, id: Uuid) -> Option<&Plugin> {
        self.get(id)
    }
    /// The pipeline `id`, if loaded.
    pub fn pipeline(&self, id: Uuid) -> Option<&Pipeline> {
        self.get(id)
    }
    /// The run `id`, if loaded.
    pub fn run(&self, id: Uuid) -> Option<&Run> {
        self.get(id)
    }
    /// The schedule `id`, if loaded.
    pub fn schedule(&self, id: Uuid) -> Option<&Schedule> {
        self.get(id)
    }
}

/// A unique key claimed or released together with an append (e.g. a pipeline name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueKey {
    /// The namespace of the key (`pipeline_name`).
    pub scope: String,
    /// The key.
    pub key: String,
    /// The aggregate that holds it.
    pub owner: Uuid,
}

/// A concurrency slot: a run holding one of its pipeline's `max_active_runs` slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotClaim {
    /// The pool: the pipeline id.
    pub pool: Uuid,
    /// The holder: the run id.
    pub holder: Uuid,
    /// Slots in the pool (unused when releasing).
    pub max: u32,
}

/// What the store must enforce atomically with the append.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Constraints {
    /// Keys to claim; a key held by another owner makes the append a `conflict`.
    pub claim_unique: Vec<UniqueKey>,
    /// Keys to free.
    pub release_unique: Vec<UniqueKey>,
    /// A slot to take; a full pool makes the append a `conflict`.
    pub acquire_slot: Option<SlotClaim>,
    /// A slot to give back.
    pub release_slot: Option<SlotClaim>,
}

/// The outcome of a command: events to append (the target's first) and constraints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Events in order, each with the aggregate it belongs to. Versions are assigned by the
    /// glue (loaded version + 1 + index per aggregate).
    pub events: Vec<(AggRef, AnyEvent)>,
    /// Store constraints.
    pub constraints: Constraints,
}

impl Decision {
    /// A decision of one event and no constraints.
    pub fn one(agg: AggRef, event: impl Into<AnyEvent>) -> Self {
        Self {
            events: vec![(agg, event.into())],
            constraints: Constraints::default(),
        }
    }

    /// Appends another event.
    pub fn and(mut self, agg: AggRef, event: impl Into<AnyEvent>) -> Self {
        self.events.push((agg, event.into()));
        self
    }

    /// Replaces the constraints.
    pub fn with(mut self, constraints: Constraints) -> Self {
        self.constraints = constraints;
        self
    }
}

/// Fills the missing id of a creating command and returns the aggregate the command
/// addresses. Called once per command, before any retry, so that retries of one
/// execution address the same new aggregate.
pub fn target(cmd: &mut Command) -> AggRef {
    match cmd {
        Command::CreatePipeline(c) => {
            c.pipeline_id.get_or_insert_with(Uuid::now_v7);
        }
        Command::RequestRun(c) => {
            let derived = c
                .schedule_id
                .zip(c.scheduled_for)
                .map(|(s, t)| flexcore_contracts::ids::scheduled_run_id(s, t));
            c.run_id.get_or_insert_with(|| derived.unwrap_or_else(Uuid::now_v7));
        }
        Command::CreateSchedule(c) => {
            c.schedule_id.get_or_insert_with(Uuid::now_v7);
        }
        _ => {}
    }
    // Every id is filled now, so `addressed` always answers; the nil fallback only keeps
    // this function total.
    addressed(cmd).unwrap_or(AggRef {
        kind: AggregateType::Plugin,
        id: Uuid::nil(),
    })
}

/// The aggregate a command addresses, without generating ids: `None` only for a creating
/// command whose id [`target`] has not filled yet.
pub fn addressed(cmd: &Command) -> Option<AggRef> {
    Some(match cmd {
        Command::RegisterPlugin(c) => {
            AggRef::plugin(flexcore_contracts::ids::plugin_id(c.name.as_str(), c.version.as_str()))
        }
        Command::DeprecatePlugin(c) => AggRef::plugin(c.plugin_id),
        Command::DisablePlugin(c) => AggRef::plugin(c.plugin_id),
        Command::EnablePlugin(c) => AggRef::plugin(c.plugin_id),
        Command::CreatePipeline(c) => AggRef::pipeline(c.pipeline_id?),
        Command::UpdatePipeline(c) => AggRef::pipeline(c.pipeline_id),
        Command::PausePipeline(c) => AggRef::pipeline(c.pipeline_id),
        Command::ResumePipeline(c) => AggRef::pipeline(c.pipeline_id),
        Command::ArchivePipeline(c) => AggRef::pipeline(c.pipeline_id),
        Command::CommitPipelineState(c) => AggRef::pipeline(c.pipeline_id),
        Command::RequestRun(c) => AggRef::run(c.run_id?),
        Command::ClaimRun(c) => AggRef::run(c.run_id),
        Command::CheckpointRun(c) => AggRef::run(c.run_id),
        Command::SucceedRun(c) => AggRef::run(c.run_id),
        Command::FailRun(c) => AggRef::run(c.run_id),
        Command::RetryRun(c) => AggRef::run(c.run_id),
        Command::CancelRun(c) => AggRef::run(c.run_id),
        Command::TimeOutRun(c) => AggRef::run(c.run_id),
        Command::CreateSchedule(c) => AggRef::schedule(c.schedule_id?),
        Command::UpdateSchedule(c) => AggRef::schedule(c.schedule_id),
        Command::PauseSchedule(c) => AggRef::schedule(c.schedule_id),
        Command::ResumeSchedule(c) => AggRef::schedule(c.schedule_id),
        Command::DeleteSchedule(c) => AggRef::schedule(c.schedule_id),
        Command::SkipSlot(c) => AggRef::schedule(c.schedule_id),
        Command::MissSlots(c) => AggRef::schedule(c.schedule_id),
    })
}

/// The aggregates the decision needs, target first. References are discovered from what is
/// already loaded (a run needs its pipeline, then the pipeline's plugins), so the glue
/// calls this until it returns nothing new.
pub fn required(cmd: &Command, loaded: &Loaded) -> Vec<AggRef> {
    let Some(target) = addressed(cmd) else {
        return Vec::new();
    };
    let mut refs = vec![target];
    match cmd {
        Command::CreatePipeline(c) => refs.extend(c.steps.iter().map(|s| AggRef::plugin(s.plugin.plugin_id()))),
        Command::UpdatePipeline(c) => {
            refs.extend(c.steps.iter().flatten().map(|s| AggRef::plugin(s.plugin.plugin_id())))
        }
        Command::RequestRun(c) => {
            refs.push(AggRef::pipeline(c.pipeline_id));
            refs.extend(c.schedule_id.map(AggRef::schedule));
            if let Some(p) = loaded.pipeline(c.pipeline_id) {
                refs.extend(p.definition.steps.iter().map(|s| AggRef::plugin(s.plugin_id)));
            }
        }
        Command::ClaimRun(_) | Command::CheckpointRun(_) => {
            if let Some(r) = loaded.run(target.id) {
                refs.push(AggRef::pipeline(r.pipeline_id));
            }
        }
        Command::CreateSchedule(c) => refs.push(AggRef::pipeline(c.pipeline_id)),
        Command::SkipSlot(c) => refs.push(AggRef::run(flexcore_contracts::ids::scheduled_run_id(
            c.schedule_id,
            c.slot,
        ))),
        _ => {}
    }
    let mut seen = std::collections::HashSet::new();
    refs.retain(|r| seen.insert(r.id));
    refs
}

/// Decides a command on the loaded aggregates: the events to append (the target's first)
/// and the constraints the store must enforce, or why the command is refused.
pub fn decide(cmd: &Command, loaded: &Loaded) -> Result<Decision, DomainError> {
    let target = addressed(cmd).ok_or_else(|| {
        DomainError::Corrupt(format!(
            "{} has no id yet: the service assigns one before deciding (domain::target)",
            cmd.name()
        ))
    })?;
    let id = target.id;
    match cmd {
        Command::RegisterPlugin(c) => plugin::register(id, c, loaded),
        Command::DeprecatePlugin(c) => plugin::deprecate(c, loaded),
        Command::DisablePlugin(c) => plugin::disable(c, loaded),
        Command::EnablePlugin(c) => plugin::enable(c, loaded),
        Command::CreatePipeline(c) => pipeline::create(id, c, loaded),
        Command::UpdatePipeline(c) => pipeline::update(c, loaded),
        Command::PausePipeline(c) => pipeline::pause(c, loaded),
        Command::ResumePipeline(c) => pipeline::resume(c, loaded),
        Command::ArchivePipeline(c) => pipeline::archive(c, loaded),
        Command::CommitPipelineState(c) => pipeline::commit_state(c, loaded),
        Command::RequestRun(c) => run::request(id, c, loaded),
        Command::ClaimRun(c) => run::claim(c, loaded),
        Command::CheckpointRun(c) => run::checkpoint(c, loaded),
        Command::SucceedRun(c) => run::succeed(c, loaded),
        Command::FailRun(c) => run::fail(c, loaded),
        Command::RetryRun(c) => run::retry(c, loaded),
        Command::CancelRun(c) => run::cancel(c, loaded),
        Command::TimeOutRun(c) => run::time_out(c, loaded),
        Command::CreateSchedule(c) => schedule::create(id, c, loaded),
        Command::UpdateSchedule(c) => schedule::update(c, loaded),
        Command::PauseSchedule(c) => schedule::pause(c, loaded),
        Command::ResumeSchedule(c) => schedule::resume(c, loaded),
        Command::DeleteSchedule(c) => schedule::delete(c, loaded),
        Command::SkipSlot(c) => schedule::skip_slot(c, loaded),
        Command::MissSlots(c) => schedule::miss_slots(c, loaded),
    }
}
