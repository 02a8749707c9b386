//! The aggregate pattern: the [`Aggregate`] trait each of the four implements (create from
//! the first event, apply the later ones), and the wrappers the service glue handles
//! without knowing which aggregate it holds — [`AggregateType`], [`AnyEvent`] and
//! [`AggregateState`] — generated from one list of the aggregates, so adding one is one
//! line there plus its `impl Aggregate`.

use std::fmt;
use std::str::FromStr;

use flexcore_contracts::events::{PipelineEvent, PluginEvent, RunEvent, ScheduleEvent};

use super::{DomainError, Pipeline, Plugin, Run, Schedule};

/// An event-sourced aggregate: its state is rebuilt by folding its events, the first of
/// which creates it. Folding only mutates and never checks business rules (those were
/// checked when the event was decided); it fails only when the event cannot belong there
/// (a first event that does not create, a creating event on an existing aggregate).
/// Deciding is done by the aggregate's command handlers, which read [`super::Loaded`].
pub trait Aggregate: Member {
    /// The state after the first event.
    fn create(event: &Self::Event) -> Result<Self, DomainError>;
    /// Folds one later event.
    fn apply(&mut self, event: &Self::Event) -> Result<(), DomainError>;
}

/// How an aggregate sits inside the wrappers: its type, its event enum, and its variant of
/// [`AggregateState`]. Implemented for the four aggregates by the list below.
pub trait Member: Sized {
    /// Its type.
    const KIND: AggregateType;
    /// Its events: one enum of the contracts.
    type Event;
    /// The state, if `state` is one of this aggregate's.
    fn state_ref(state: &AggregateState) -> Option<&Self>;
    /// The state, if `state` is one of this aggregate's.
    fn take(state: AggregateState) -> Option<Self>;
    /// Wrapped.
    fn into_state(self) -> AggregateState;
}

macro_rules! aggregates {
    ($( $variant:ident($event:ty) = $name:literal ),* $(,)?) => {
        /// The four aggregate types.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum AggregateType {
            $( #[doc = concat!("A ", $name, ".")] $variant, )*
        }

        impl AggregateType {
            /// The stored and wire name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name,)* }
            }
        }

        impl FromStr for AggregateType {
            type Err = DomainError;

            fn from_str(s: &str) -> Result<Self, DomainError> {
                match s {
                    $($name => Ok(Self::$variant),)*
                    other => {
                        let names = [$($name),*];
                        let (last, rest) = names.split_last().unwrap_or((&"", &[]));
                        Err(DomainError::Corrupt(format!(
                            "unknown aggregate type {other:?}: expected {} or {last}",
                            rest.join(", ")
                        )))
                    }
                }
            }
        }

        /// An event of any aggregate.
        #[derive(Debug, Clone, PartialEq)]
        pub enum AnyEvent {
            $( #[doc = concat!("A ", $name, " event.")] $variant($event), )*
        }

        impl AnyEvent {
            /// Rebuilds an event from its stored columns (upcasting older schema versions).
            /// Anything that does not decode is [`DomainError::Corrupt`]: the log is the
            /// source of truth, so an unreadable event is a bug, never the client's fault.
            pub fn from_stored(
                aggregate_type: &str,
                event_type: &str,
                schema_version: u32,
                data: &flexcore_contracts::OpaqueJson,
            ) -> Result<Self, DomainError> {
                let corrupt = |e: flexcore_contracts::events::EventDecodeError| DomainError::Corrupt(e.to_string());
                Ok(match aggregate_type.parse::<AggregateType>()? {
                    $(AggregateType::$variant => {
                        Self::$variant(<$event>::from_stored(event_type, schema_version, data).map_err(corrupt)?)
                    })*
                })
            }

            /// The qualified event type (`pipeline.created`).
            pub fn event_type(&self) -> &'static str {
                match self { $(Self::$variant(e) => e.event_type(),)* }
            }

            /// The event's `data` as stored.
            pub fn data(&self) -> flexcore_contracts::OpaqueJson {
                match self { $(Self::$variant(e) => e.data(),)* }
            }

            /// The aggregate type the event belongs to.
            pub fn aggregate_type(&self) -> AggregateType {
                match self { $(Self::$variant(_) => AggregateType::$variant,)* }
            }
        }

        /// The folded state of any aggregate.
        #[derive(Debug, Clone, PartialEq)]
        pub enum AggregateState {
            $( #[doc = concat!("A ", $name, ".")] $variant($variant), )*
        }

        impl AggregateState {
            /// The aggregate type.
            pub fn kind(&self) -> AggregateType {
                match self { $(Self::$variant(_) => AggregateType::$variant,)* }
            }

            /// Folds one event into the state (`None` before the first event) with the
            /// event's aggregate's [`Aggregate::create`] or [`Aggregate::apply`]; an event
            /// of another aggregate type than the state's is [`DomainError::Corrupt`].
            pub fn evolve(state: Option<AggregateState>, event: &AnyEvent) -> Result<AggregateState, DomainError> {
                match event {
                    $(AnyEvent::$variant(e) => fold::<$variant>(state, e, event),)*
                }
            }
        }

        $(
            impl From<$event> for AnyEvent {
                fn from(e: $event) -> Self {
                    Self::$variant(e)
                }
            }

            impl Member for $variant {
                const KIND: AggregateType = AggregateType::$variant;
                type Event = $event;

                fn state_ref(state: &AggregateState) -> Option<&Self> {
                    match state {
                        AggregateState::$variant(s) => Some(s),
                        _ => None,
                    }
                }

                fn take(state: AggregateState) -> Option<Self> {
                    match state {
                        AggregateState::$variant(s) => Some(s),
                        _ => None,
                    }
                }

                fn into_state(self) -> AggregateState {
                    AggregateState::$variant(self)
                }
            }
        )*
    };
}

aggregates! {
    Plugin(PluginEvent) = "plugin",
    Pipeline(PipelineEvent) = "pipeline",
    Run(RunEvent) = "run",
    Schedule(ScheduleEvent) = "schedule",
}

/// [`AggregateState::evolve`] for one aggregate type.
fn fold<A: Aggregate>(
    state: Option<AggregateState>,
    event: &A::Event,
    any: &AnyEvent,
) -> Result<AggregateState, DomainError> {
    let Some(state) = state else {
        return A::create(event).map(A::into_state);
    };
    let kind = state.kind();
    let Some(mut aggregate) = A::take(state) else {
        return Err(DomainError::Corrupt(format!(
            "{} event {} cannot be applied to a {kind}",
            A::KIND,
            any.event_type(),
        )));
    };
    aggregate.apply(event)?;
    Ok(aggregate.into_state())
}

impl fmt::Display for AggregateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `From` each event payload into [`AnyEvent`], so a handler writes `Decision::one(agg,
/// PipelinePaused { .. })`.
macro_rules! into_any {
    ($($enum:ty: $($ty:ty),*;)*) => {
        $($(
            impl From<$ty> for AnyEvent {
                fn from(e: $ty) -> Self {
                    Self::from(<$enum>::from(e))
                }
            }
        )*)*
    };
}

use flexcore_contracts::events as ev;
into_any! {
    PluginEvent: ev::PluginRegistered, ev::PluginDeprecated, ev::PluginDisabled, ev::PluginEnabled;
    PipelineEvent: ev::PipelineCreated, ev::PipelineUpdated, ev::PipelinePaused, ev::PipelineResumed,
        ev::PipelineArchived, ev::PipelineStateCommitted;
    RunEvent: ev::RunRequested, ev::RunClaimed, ev::RunCheckpointed, ev::RunSucceeded, ev::RunFailed,
        ev::RunRetried, ev::RunCancelled, ev::RunTimedOut;
    ScheduleEvent: ev::ScheduleCreated, ev::ScheduleUpdated, ev::SchedulePaused, ev::ScheduleResumed,
        ev::ScheduleDeleted, ev::ScheduleSlotSkipped, ev::ScheduleSlotsMissed;
}
