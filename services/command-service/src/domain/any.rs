//! The aggregate-independent wrappers: aggregate types, any event, any state and the fold.

use std::fmt;
use std::str::FromStr;

use flexcore_contracts::events::{EventDecodeError, PipelineEvent, PluginEvent, RunEvent, ScheduleEvent};

use super::{DomainError, Pipeline, Plugin, Run, Schedule};

/// The four aggregate types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregateType {
    /// A plugin version.
    Plugin,
    /// A pipeline.
    Pipeline,
    /// A run of a pipeline.
    Run,
    /// A cron schedule of a pipeline.
    Schedule,
}

impl AggregateType {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plugin => "plugin",
            Self::Pipeline => "pipeline",
            Self::Run => "run",
            Self::Schedule => "schedule",
        }
    }
}

impl fmt::Display for AggregateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AggregateType {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, DomainError> {
        match s {
            "plugin" => Ok(Self::Plugin),
            "pipeline" => Ok(Self::Pipeline),
            "run" => Ok(Self::Run),
            "schedule" => Ok(Self::Schedule),
            other => Err(DomainError::Corrupt(format!(
                "unknown aggregate type {other:?}: expected plugin, pipeline, run or schedule"
            ))),
        }
    }
}

/// An event of any aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyEvent {
    /// A plugin event.
    Plugin(PluginEvent),
    /// A pipeline event.
    Pipeline(PipelineEvent),
    /// A run event.
    Run(RunEvent),
    /// A schedule event.
    Schedule(ScheduleEvent),
}

impl AnyEvent {
    /// Rebuilds an event from its stored columns (upcasting older schema versions).
    /// Anything that does not decode is [`DomainError::Corrupt`]: the log is the source of
    /// truth, so an unreadable event is a bug, never the client's fault.
    pub fn from_stored(
        aggregate_type: &str,
        event_type: &str,
        schema_version: u32,
        data: &flexcore_contracts::OpaqueJson,
    ) -> Result<Self, DomainError> {
        let kind = aggregate_type
            .parse::<AggregateType>()
            .map_err(|e| DomainError::Corrupt(e.to_string()))?;
        let corrupt = |e: EventDecodeError| DomainError::Corrupt(e.to_string());
        Ok(match kind {
            AggregateType::Plugin => {
                Self::Plugin(PluginEvent::from_stored(event_type, schema_version, data).map_err(corrupt)?)
            }
            AggregateType::Pipeline => {
                Self::Pipeline(PipelineEvent::from_stored(event_type, schema_version, data).map_err(corrupt)?)
            }
            AggregateType::Run => Self::Run(RunEvent::from_stored(event_type, schema_version, data).map_err(corrupt)?),
            AggregateType::Schedule => {
                Self::Schedule(ScheduleEvent::from_stored(event_type, schema_version, data).map_err(corrupt)?)
            }
        })
    }

    /// The qualified event type (`pipeline.created`).
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Plugin(e) => e.event_type(),
            Self::Pipeline(e) => e.event_type(),
            Self::Run(e) => e.event_type(),
            Self::Schedule(e) => e.event_type(),
        }
    }

    /// The event's `data` as stored.
    pub fn data(&self) -> flexcore_contracts::OpaqueJson {
        match self {
            Self::Plugin(e) => e.data(),
            Self::Pipeline(e) => e.data(),
            Self::Run(e) => e.data(),
            Self::Schedule(e) => e.data(),
        }
    }

    /// The aggregate type the event belongs to.
    pub fn aggregate_type(&self) -> AggregateType {
        match self {
            Self::Plugin(_) => AggregateType::Plugin,
            Self::Pipeline(_) => AggregateType::Pipeline,
            Self::Run(_) => AggregateType::Run,
            Self::Schedule(_) => AggregateType::Schedule,
        }
    }
}

macro_rules! into_any {
    ($($variant:ident($enum:ty): $($ty:ty),*;)*) => {
        $(
            impl From<$enum> for AnyEvent {
                fn from(e: $enum) -> Self {
                    Self::$variant(e)
                }
            }
            $(
                impl From<$ty> for AnyEvent {
                    fn from(e: $ty) -> Self {
                        Self::$variant(<$enum>::from(e))
                    }
                }
            )*
        )*
    };
}

use flexcore_contracts::events as ev;
into_any! {
    Plugin(PluginEvent): ev::PluginRegistered, ev::PluginDeprecated, ev::PluginDisabled, ev::PluginEnabled;
    Pipeline(PipelineEvent): ev::PipelineCreated, ev::PipelineUpdated, ev::PipelinePaused, ev::PipelineResumed,
        ev::PipelineArchived, ev::PipelineStateCommitted;
    Run(RunEvent): ev::RunRequested, ev::RunClaimed, ev::RunCheckpointed, ev::RunSucceeded, ev::RunFailed,
        ev::RunRetried, ev::RunCancelled, ev::RunTimedOut;
    Schedule(ScheduleEvent): ev::ScheduleCreated, ev::ScheduleUpdated, ev::SchedulePaused, ev::ScheduleResumed,
        ev::ScheduleDeleted, ev::ScheduleSlotSkipped, ev::ScheduleSlotsMissed;
}

/// The folded state of any aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum AggregateState {
    /// A plugin.
    Plugin(Plugin),
    /// A pipeline.
    Pipeline(Pipeline),
    /// A run.
    Run(Run),
    /// A schedule.
    Schedule(Schedule),
}

impl AggregateState {
    /// The aggregate type.
    pub fn kind(&self) -> AggregateType {
        match self {
            Self::Plugin(_) => AggregateType::Plugin,
            Self::Pipeline(_) => AggregateType::Pipeline,
            Self::Run(_) => AggregateType::Run,
            Self::Schedule(_) => AggregateType::Schedule,
        }
    }

    /// Folds one event into the state (`None` before the first event). It only mutates and
    /// never checks business rules (those were checked when the event was decided); it
    /// fails only when the event cannot belong there (wrong aggregate type, a first event
    /// that does not create, a creating event on an existing aggregate).
    pub fn evolve(state: Option<AggregateState>, event: &AnyEvent) -> Result<AggregateState, DomainError> {
        Ok(match (state, event) {
            (None, AnyEvent::Plugin(e)) => Self::Plugin(Plugin::create(e)?),
            (None, AnyEvent::Pipeline(e)) => Self::Pipeline(Pipeline::create(e)?),
            (None, AnyEvent::Run(e)) => Self::Run(Run::create(e)?),
            (None, AnyEvent::Schedule(e)) => Self::Schedule(Schedule::create(e)?),
            (Some(Self::Plugin(mut s)), AnyEvent::Plugin(e)) => {
                s.apply(e)?;
                Self::Plugin(s)
            }
            (Some(Self::Pipeline(mut s)), AnyEvent::Pipeline(e)) => {
                s.apply(e)?;
                Self::Pipeline(s)
            }
            (Some(Self::Run(mut s)), AnyEvent::Run(e)) => {
                s.apply(e)?;
                Self::Run(s)
            }
            (Some(Self::Schedule(mut s)), AnyEvent::Schedule(e)) => {
                s.apply(e)?;
                Self::Schedule(s)
            }
            (Some(state), event) => {
                return Err(DomainError::Corrupt(format!(
                    "{} event {} cannot be applied to a {}",
                    event.aggregate_type(),
                    event.event_type(),
                    state.kind()
                )))
            }
        })
    }
}
