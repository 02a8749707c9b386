//! The lifecycle states of the four aggregates and the one rule for how their events move
//! them. The command service's aggregates, the projections' read models and the
//! scheduler each fold the same events; they take a status from here so that all three
//! agree on what, say, a non-final `run.timed_out` leaves a run in. The wire names are the
//! ones the read models store and the views show (`state`).

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::events::{PipelineEvent, PluginEvent, RunEvent, ScheduleEvent};

/// A stored or sent state name that is not one of the lifecycle's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {lifecycle} state {value:?}: expected one of {expected}")]
pub struct UnknownState {
    /// Which lifecycle (`plugin`, `pipeline`, `run`, `schedule`).
    pub lifecycle: &'static str,
    /// The name given.
    pub value: String,
    /// The names there are, comma-separated.
    pub expected: &'static str,
}

macro_rules! lifecycle {
    ($(#[$doc:meta])* $name:ident, $lifecycle:literal { $( $(#[$vdoc:meta])* $variant:ident = $wire:literal ),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $( $(#[$vdoc])* $variant, )*
        }

        impl $name {
            /// Every state, in lifecycle order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The wire name (as stored in the read models and shown in views).
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $wire,)* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;

            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s {
                    $($wire => Ok(Self::$variant),)*
                    other => Err(UnknownState {
                        lifecycle: $lifecycle,
                        value: other.to_owned(),
                        expected: concat!($($wire, ", "),*),
                    }),
                }
            }
        }
    };
}

lifecycle! {
    /// Lifecycle of a plugin version.
    PluginStatus, "plugin" {
        /// Usable.
        Active = "active",
        /// Usable, but flagged for replacement.
        Deprecated = "deprecated",
        /// New pipelines and runs may not use it.
        Disabled = "disabled",
    }
}

lifecycle! {
    /// Lifecycle of a pipeline.
    PipelineStatus, "pipeline" {
        /// Runs may be requested.
        Active = "active",
        /// No new runs until resumed.
        Paused = "paused",
        /// Final; the name is free again.
        Archived = "archived",
    }
}

lifecycle! {
    /// Where a run is.
    RunStatus, "run" {
        /// The current attempt waits for a runner.
        Requested = "requested",
        /// A runner holds the current attempt.
        Running = "running",
        /// The current attempt failed retryably or lost its lease; a retry will follow.
        AwaitingRetry = "awaiting_retry",
        /// Final: done.
        Succeeded = "succeeded",
        /// Final: the last attempt failed.
        Failed = "failed",
        /// Final: stopped on request.
        Cancelled = "cancelled",
        /// Final: the run timed out (or its last attempt lost its lease).
        TimedOut = "timed_out",
    }
}

lifecycle! {
    /// Lifecycle of a schedule.
    ScheduleStatus, "schedule" {
        /// Fires.
        Active = "active",
        /// Does not fire; slots passed while paused are not caught up.
        Paused = "paused",
        /// Final.
        Deleted = "deleted",
    }
}

// The transitions. `initial` answers only for the event that creates the aggregate;
// `after` takes any event, a creating one giving the initial state again (a folder that
// must refuse a second creating event checks that itself, before asking for the status).

impl PluginStatus {
    /// The state `plugin.registered` gives; `None` for any other event.
    pub fn initial(event: &PluginEvent) -> Option<Self> {
        matches!(event, PluginEvent::Registered(_)).then_some(Self::Active)
    }

    /// The state after `event`.
    pub fn after(self, event: &PluginEvent) -> Self {
        match event {
            PluginEvent::Registered(_) | PluginEvent::Enabled(_) => Self::Active,
            PluginEvent::Deprecated(_) => Self::Deprecated,
            PluginEvent::Disabled(_) => Self::Disabled,
        }
    }
}

impl PipelineStatus {
    /// The state `pipeline.created` gives; `None` for any other event.
    pub fn initial(event: &PipelineEvent) -> Option<Self> {
        matches!(event, PipelineEvent::Created(_)).then_some(Self::Active)
    }

    /// The state after `event`.
    pub fn after(self, event: &PipelineEvent) -> Self {
        match event {
            PipelineEvent::Created(_) | PipelineEvent::Resumed(_) => Self::Active,
            PipelineEvent::Paused(_) => Self::Paused,
            PipelineEvent::Archived(_) => Self::Archived,
            PipelineEvent::Updated(_) | PipelineEvent::StateCommitted(_) => self,
        }
    }
}

impl RunStatus {
    /// True when nothing can happen to the run any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut)
    }

    /// True for the final states that count as a failure (failed, timed out).
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::TimedOut)
    }

    /// The state `run.requested` gives; `None` for any other event.
    pub fn initial(event: &RunEvent) -> Option<Self> {
        matches!(event, RunEvent::Requested(_)).then_some(Self::Requested)
    }

    /// The state after `event`: a failure or time-out that is not final leaves the run
    /// awaiting a retry.
    pub fn after(self, event: &RunEvent) -> Self {
        match event {
            RunEvent::Requested(_) | RunEvent::Retried(_) => Self::Requested,
            RunEvent::Claimed(_) => Self::Running,
            RunEvent::Checkpointed(_) => self,
            RunEvent::Succeeded(_) => Self::Succeeded,
            RunEvent::Failed(e) if e.is_final => Self::Failed,
            RunEvent::TimedOut(e) if e.is_final => Self::TimedOut,
            RunEvent::Failed(_) | RunEvent::TimedOut(_) => Self::AwaitingRetry,
            RunEvent::Cancelled(_) => Self::Cancelled,
        }
    }
}

impl ScheduleStatus {
    /// The state `schedule.created` gives (paused when created paused); `None` for any
    /// other event.
    pub fn initial(event: &ScheduleEvent) -> Option<Self> {
        match event {
            ScheduleEvent::Created(e) if e.paused => Some(Self::Paused),
            ScheduleEvent::Created(_) => Some(Self::Active),
            _ => None,
        }
    }

    /// The state after `event`.
    pub fn after(self, event: &ScheduleEvent) -> Self {
        match event {
            ScheduleEvent::Created(_) => Self::initial(event).unwrap_or(self),
            ScheduleEvent::Paused(_) => Self::Paused,
            ScheduleEvent::Resumed(_) => Self::Active,
            ScheduleEvent::Deleted(_) => Self::Deleted,
            ScheduleEvent::Updated(_) | ScheduleEvent::SlotSkipped(_) | ScheduleEvent::SlotsMissed(_) => self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{
        PipelineArchived, PipelineResumed, PipelineStateCommitted, PluginDeprecated, PluginEnabled, RunCheckpointed,
        RunClaimed, RunFailed, RunRetried, RunTimedOut, ScheduleCreated, ScheduleDeleted, ScheduleSlotSkipped,
    };
    use crate::model::{RunError, ScheduleSpec, StreamCounters, TimeoutReason};

    #[test]
    fn wire_names_round_trip_through_serde_and_from_str() {
        fn check<T>(all: &[T])
        where
            T: Copy + PartialEq + fmt::Debug + fmt::Display + FromStr + Serialize,
            <T as FromStr>::Err: fmt::Debug,
        {
            for s in all {
                let wire = s.to_string();
                assert_eq!(
                    serde_json::to_value(s).ok(),
                    Some(serde_json::Value::String(wire.clone()))
                );
                assert_eq!(wire.parse::<T>().ok(), Some(*s));
            }
        }
        check(PluginStatus::ALL);
        check(PipelineStatus::ALL);
        check(RunStatus::ALL);
        check(ScheduleStatus::ALL);
        assert_eq!(RunStatus::AwaitingRetry.as_str(), "awaiting_retry");
        let unknown = "queued".parse::<RunStatus>();
        assert!(unknown.is_err_and(|e| e.to_string().contains("requested, running, awaiting_retry")));
    }

    #[test]
    fn only_a_creating_event_gives_an_initial_state() {
        assert_eq!(PluginStatus::initial(&PluginEvent::from(PluginEnabled {})), None);
        assert_eq!(PipelineStatus::initial(&PipelineEvent::from(PipelineResumed {})), None);
        let created = |paused: bool| {
            ScheduleEvent::from(ScheduleCreated {
                schedule_id: uuid::Uuid::nil(),
                pipeline_id: uuid::Uuid::nil(),
                spec: serde_json::from_value::<ScheduleSpec>(serde_json::json!({"cron": "0 * * * *"}))
                    .unwrap_or_else(|e| unreachable!("{e}")),
                paused,
            })
        };
        assert_eq!(ScheduleStatus::initial(&created(true)), Some(ScheduleStatus::Paused));
        assert_eq!(ScheduleStatus::initial(&created(false)), Some(ScheduleStatus::Active));
        assert_eq!(ScheduleStatus::Deleted.after(&created(true)), ScheduleStatus::Paused);
    }

    #[test]
    fn events_move_plugins_pipelines_and_schedules() {
        let deprecated = PluginEvent::from(PluginDeprecated { reason: None });
        assert_eq!(PluginStatus::Active.after(&deprecated), PluginStatus::Deprecated);
        assert_eq!(
            PluginStatus::Disabled.after(&PluginEvent::from(PluginEnabled {})),
            PluginStatus::Active
        );
        let committed = PipelineEvent::from(PipelineStateCommitted {
            state: crate::OpaqueJson::null(),
            run_id: None,
        });
        assert_eq!(PipelineStatus::Paused.after(&committed), PipelineStatus::Paused);
        assert_eq!(
            PipelineStatus::Active.after(&PipelineEvent::from(PipelineArchived { reason: None })),
            PipelineStatus::Archived
        );
        let skipped = ScheduleEvent::from(ScheduleSlotSkipped {
            slot: chrono::DateTime::UNIX_EPOCH,
            reason: "overlap".into(),
        });
        assert_eq!(ScheduleStatus::Paused.after(&skipped), ScheduleStatus::Paused);
        assert_eq!(
            ScheduleStatus::Active.after(&ScheduleEvent::from(ScheduleDeleted {})),
            ScheduleStatus::Deleted
        );
    }

    #[test]
    fn a_failure_is_final_only_when_the_event_says_so() {
        let failed = |is_final: bool| {
            RunEvent::from(RunFailed {
                attempt: 1,
                error: RunError {
                    code: "io".into(),
                    message: "boom".into(),
                    step: None,
                },
                retryable: !is_final,
                is_final,
                counters: StreamCounters::new(),
            })
        };
        let timed_out = |is_final: bool| {
            RunEvent::from(RunTimedOut {
                attempt: 1,
                reason: TimeoutReason::LeaseExpired,
                is_final,
            })
        };
        assert_eq!(RunStatus::Running.after(&failed(false)), RunStatus::AwaitingRetry);
        assert_eq!(RunStatus::Running.after(&failed(true)), RunStatus::Failed);
        assert_eq!(RunStatus::Running.after(&timed_out(false)), RunStatus::AwaitingRetry);
        assert_eq!(RunStatus::Running.after(&timed_out(true)), RunStatus::TimedOut);
        let claimed = RunEvent::from(RunClaimed {
            attempt: 2,
            runner_id: "r".parse().unwrap_or_else(|_| unreachable!()),
            lease_seconds: 30,
            resume_state: crate::OpaqueJson::null(),
        });
        let checkpointed = RunEvent::from(RunCheckpointed {
            attempt: 2,
            state: crate::OpaqueJson::null(),
            counters: StreamCounters::new(),
        });
        let retried = RunEvent::from(RunRetried {
            attempt: 2,
            pipeline_id: uuid::Uuid::nil(),
        });
        assert_eq!(RunStatus::AwaitingRetry.after(&retried), RunStatus::Requested);
        assert_eq!(RunStatus::Requested.after(&claimed), RunStatus::Running);
        assert_eq!(RunStatus::Running.after(&checkpointed), RunStatus::Running);
        assert!(RunStatus::TimedOut.is_terminal() && RunStatus::TimedOut.is_failure());
        assert!(!RunStatus::AwaitingRetry.is_terminal());
        assert!(RunStatus::Cancelled.is_terminal() && !RunStatus::Cancelled.is_failure());
    }
}
