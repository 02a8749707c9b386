use chrono::{DateTime, Utc};
use flexcore_contracts::events::RunEvent;
use flexcore_contracts::lifecycle::RunStatus;
use flexcore_contracts::model::StreamCounters;
use flexcore_contracts::views::{AttemptView, RunView};
use flexcore_eventstore::RecordedEvent;
use uuid::Uuid;

use super::{status, typed};
use crate::projection::{Activity, Entity};
use crate::tables::TableSpec;

impl Entity for RunView {
    const SPEC: TableSpec = TableSpec {
        base: "runs",
        key: "run_id",
        columns: &[
            ("run_id", "uuid NOT NULL"),
            ("pipeline_id", "uuid NOT NULL"),
            ("state", "text NOT NULL"),
            ("requested_at", "timestamptz NOT NULL"),
            ("finished_at", "timestamptz"),
            ("updated_at", "timestamptz NOT NULL"),
            // Nullable: rows written before the column existed have none until a rebuild.
            ("plugin_ids", "uuid[]"),
            ("doc", "json NOT NULL"),
        ],
        indexes: &[
            "(pipeline_id, requested_at, run_id)",
            "(state, requested_at, run_id)",
            "(requested_at, run_id)",
            "(updated_at, run_id)",
            "(finished_at) WHERE finished_at IS NOT NULL",
            "USING gin (plugin_ids)",
        ],
        counts: true,
        minutes: true,
        derived: &[],
    };
    const AGGREGATE: &'static str = RunEvent::AGGREGATE_TYPE;

    fn create(event: &RecordedEvent) -> Result<Self, String> {
        let first = typed(event, RunEvent::from_stored)?;
        let (Some(state), RunEvent::Requested(e)) = (RunStatus::initial(&first), first) else {
            return Err("the first run event must be run.requested".into());
        };
        Ok(RunView {
            run_id: e.run_id,
            pipeline_id: e.pipeline_id,
            pipeline_name: e.pipeline_name.to_string(),
            state: state.as_str().into(),
            trigger: e.trigger,
            schedule_id: e.schedule_id,
            scheduled_for: e.scheduled_for,
            definition_version: e.definition_version,
            plugin_ids: e.definition.steps.iter().fold(Vec::new(), |mut ids, step| {
                if !ids.contains(&step.plugin_id) {
                    ids.push(step.plugin_id);
                }
                ids
            }),
            attempt: e.attempt,
            attempts: vec![pending(e.attempt)],
            counters: StreamCounters::new(),
            records_total: 0,
            error: None,
            timeout_reason: None,
            last_state: flexcore_contracts::OpaqueJson::null(),
            last_checkpoint_at: None,
            requested_at: event.recorded_at,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            updated_at: event.recorded_at,
            aggregate_version: event.version,
        })
    }

    fn apply(&mut self, event: &RecordedEvent) -> Result<(), String> {
        let at = event.recorded_at;
        let typed = typed(event, RunEvent::from_stored)?;
        let state = status::<RunStatus>(&self.state)?.after(&typed);
        match typed {
            RunEvent::Requested(_) => return Err("run requested twice".into()),
            RunEvent::Claimed(e) => {
                self.attempt = e.attempt;
                self.started_at.get_or_insert(at);
                self.set_counters(StreamCounters::new());
                let attempt = self.attempt_mut(e.attempt);
                attempt.runner_id = Some(e.runner_id.to_string());
                attempt.claimed_at = Some(at);
            }
            RunEvent::Checkpointed(e) => {
                self.last_state = e.state;
                self.last_checkpoint_at = Some(at);
                self.attempt_mut(e.attempt).counters = e.counters.clone();
                self.set_counters(e.counters);
            }
            RunEvent::Succeeded(e) => {
                self.end_attempt(e.attempt, RunStatus::Succeeded, None, &e.counters, at);
                self.set_counters(e.counters);
                self.finish(at);
            }
            RunEvent::Failed(e) => {
                self.end_attempt(e.attempt, RunStatus::Failed, Some(e.error.clone()), &e.counters, at);
                self.set_counters(e.counters);
                self.error = Some(e.error);
                if state.is_terminal() {
                    self.finish(at);
                }
            }
            RunEvent::Retried(e) => {
                self.attempt = e.attempt;
                self.attempts.push(pending(e.attempt));
            }
            RunEvent::Cancelled(e) => {
                let counters = self.counters.clone();
                if self.attempt_mut(e.attempt).outcome.is_none() {
                    self.end_attempt(e.attempt, RunStatus::Cancelled, None, &counters, at);
                }
                self.finish(at);
            }
            RunEvent::TimedOut(e) => {
                let counters = self.counters.clone();
                self.end_attempt(e.attempt, RunStatus::TimedOut, None, &counters, at);
                self.timeout_reason = Some(e.reason);
                if state.is_terminal() {
                    self.finish(at);
                }
            }
        }
        self.state = state.as_str().into();
        self.updated_at = at;
        self.aggregate_version = event.version;
        Ok(())
    }

    fn id(&self) -> Uuid {
        self.run_id
    }

    fn state(&self) -> &str {
        &self.state
    }

    fn aggregate_version(&self) -> u64 {
        self.aggregate_version
    }

    fn activity(&self, old_state: Option<&str>) -> Activity {
        let state = self.state.parse::<RunStatus>().ok();
        let is_final = |state: &str| state.parse::<RunStatus>().is_ok_and(RunStatus::is_terminal);
        let finished = self
            .finished_at
            .filter(|_| state.is_some_and(RunStatus::is_terminal) && !old_state.is_some_and(is_final));
        Activity {
            requested: old_state.is_none().then_some(self.requested_at),
            finished,
            failed: finished.is_some() && state.is_some_and(RunStatus::is_failure),
        }
    }
}

fn pending(attempt: u32) -> AttemptView {
    AttemptView {
        attempt,
        runner_id: None,
        claimed_at: None,
        ended_at: None,
        outcome: None,
        error: None,
        counters: StreamCounters::new(),
    }
}

trait RunViewExt {
    fn attempt_mut(&mut self, attempt: u32) -> &mut AttemptView;
    fn end_attempt(
        &mut self,
        attempt: u32,
        outcome: RunStatus,
        error: Option<flexcore_contracts::model::RunError>,
        counters: &StreamCounters,
        at: DateTime<Utc>,
    );
    fn set_counters(&mut self, counters: StreamCounters);
    fn finish(&mut self, at: DateTime<Utc>);
}

impl RunViewExt for RunView {
    fn attempt_mut(&mut self, attempt: u32) -> &mut AttemptView {
        let index = match self.attempts.iter().position(|a| a.attempt == attempt) {
            Some(i) => i,
            None => {
                self.attempts.push(pending(attempt));
                self.attempts.len() - 1
            }
        };
        &mut self.attempts[index]
    }

    fn end_attempt(
        &mut self,
        attempt: u32,
        outcome: RunStatus,
        error: Option<flexcore_contracts::model::RunError>,
        counters: &StreamCounters,
        at: DateTime<Utc>,
    ) {
        let a = self.attempt_mut(attempt);
        a.outcome = Some(outcome.as_str().to_owned());
        a.ended_at = Some(at);
        a.error = error;
        a.counters = counters.clone();
    }

    fn set_counters(&mut self, counters: StreamCounters) {
        self.records_total = counters.values().sum();
        self.counters = counters;
    }

    /// Records the end of the run (its state is set by the caller).
    fn finish(&mut self, at: DateTime<Utc>) {
        self.finished_at = Some(at);
        self.duration_ms = u64::try_from((at - self.requested_at).num_milliseconds()).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flexcore_contracts::events::{RunClaimed, RunFailed, RunRequested, RunRetried, RunSucceeded};
    use flexcore_contracts::model::{PipelineDefinition, RetryPolicy, RunError, RunTrigger};

    fn event(version: u64, e: RunEvent, at_ms: i64) -> RecordedEvent {
        RecordedEvent {
            global_position: version,
            transaction_id: version,
            event_id: Uuid::new_v4(),
            aggregate_type: "run".into(),
            aggregate_id: Uuid::nil(),
            version,
            event_type: e.event_type().into(),
            schema_version: 1,
            data: e.data(),
            metadata: Default::default(),
            recorded_at: DateTime::from_timestamp_millis(at_ms).unwrap_or_default(),
        }
    }

    #[test]
    fn a_retried_run_keeps_every_attempt_and_its_duration() {
        let requested = RunEvent::from(RunRequested {
            run_id: Uuid::nil(),
            pipeline_id: Uuid::nil(),
            pipeline_name: "p".parse().unwrap_or_else(|_| unreachable!()),
            definition_version: 1,
            definition: PipelineDefinition {
                steps: vec![],
                max_active_runs: 1,
                retry: RetryPolicy::default(),
                run_timeout_seconds: 60,
            },
            trigger: RunTrigger::Manual,
            schedule_id: None,
            scheduled_for: None,
            attempt: 1,
        });
        let claimed = |attempt| {
            RunEvent::from(RunClaimed {
                attempt,
                runner_id: "r1".parse().unwrap_or_else(|_| unreachable!()),
                lease_seconds: 30,
                resume_state: flexcore_contracts::OpaqueJson::null(),
            })
        };
        let mut view = RunView::create(&event(1, requested, 0)).unwrap_or_else(|e| unreachable!("{e}"));
        let steps = [
            claimed(1),
            RunEvent::from(RunFailed {
                attempt: 1,
                error: RunError {
                    code: "io".into(),
                    message: "boom".into(),
                    step: None,
                },
                retryable: true,
                is_final: false,
                counters: [("s".to_owned(), 3)].into(),
            }),
            RunEvent::from(RunRetried {
                attempt: 2,
                pipeline_id: Uuid::nil(),
            }),
            claimed(2),
            RunEvent::from(RunSucceeded {
                attempt: 2,
                counters: [("s".to_owned(), 5), ("t".to_owned(), 2)].into(),
            }),
        ];
        for (i, e) in steps.into_iter().enumerate() {
            let v = i as u64 + 2;
            view.apply(&event(v, e, 1000 * v as i64))
                .unwrap_or_else(|e| unreachable!("{e}"));
        }
        assert_eq!(view.state, "succeeded");
        assert_eq!(view.attempt, 2);
        assert_eq!(view.attempts.len(), 2);
        assert_eq!(view.attempts[0].outcome.as_deref(), Some("failed"));
        assert_eq!(view.attempts[0].counters.get("s"), Some(&3));
        assert_eq!(view.attempts[1].outcome.as_deref(), Some("succeeded"));
        assert_eq!(view.records_total, 7);
        assert_eq!(view.duration_ms, Some(6000));
        assert_eq!(view.error.as_ref().map(|e| e.code.as_str()), Some("io"));
        assert_eq!(view.aggregate_version, 6);
    }
}
