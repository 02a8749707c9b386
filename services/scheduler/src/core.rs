//! The scheduler's state and decisions, without I/O: events and heartbeats go in, timers
//! are armed, and due timers turn into [`Action`]s (commands to send). Everything it knows
//! is derived from the event log (plus heartbeats, which only ever postpone a lease expiry),
//! so a restarted replica that replays the log arrives at the same timers.
//!
//! # Slots
//! Each schedule has a cursor: every slot at or before it has an outcome (a run, a skip, a
//! miss) or predates the schedule's creation, last resume or last spec change. The next
//! slot after the cursor is armed at `slot + jitter`. When several slots are due at once
//! (after downtime), those older than the catch-up window are missed, and of the rest the
//! latest `catchup_cap` fire and the older ones are missed; missed slots are recorded.
//!
//! # Overlap (counted over the pipeline's active runs, whatever started them)
//! - `skip`: a slot that finds a run active is skipped (`schedule.slot_skipped`, `overlap`).
//! - `buffer_one`: the first such slot waits and fires when the pipeline is idle; further
//!   ones are skipped. The buffer lives in memory: after a restart the waiting slot is
//!   treated like any slot without outcome (caught up under the catch-up rules).
//! - `allow`: fires; the command service refuses beyond `max_active_runs`, and the slot is
//!   then skipped with reason `max_active_runs`.
//!
//! # Runs
//! A running attempt whose last sign of life (claim, checkpoint, heartbeat) is older than its
//! lease is timed out (`lease_expired`); a run awaiting retry is retried at the failure's
//! `recorded_at` plus the pipeline's back-off ([`RetryPolicy::backoff`]); a run older than
//! its pipeline's `run_timeout_seconds` (counted from its request) is timed out for good.
//!
//! # Statuses and undecodable events
//! Pipeline, run and schedule statuses are the contracts' lifecycle enums, moved by their
//! shared transitions, so the scheduler agrees with the command service and the read
//! models on what each event means. An event of those aggregates that does not decode is
//! an [`UndecodableEvent`] error, never skipped: the log is the truth, and a state folded
//! past a hole in it is one the log does not describe (docs/architecture.md).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use flexcore_contracts::envelope::EventEnvelope;
use flexcore_contracts::events::{EventDecodeError, PipelineEvent, RunEvent, ScheduleEvent};
use flexcore_contracts::ids::scheduled_run_id;
use flexcore_contracts::lifecycle::{PipelineStatus, RunStatus, ScheduleStatus};
use flexcore_contracts::model::{OverlapPolicy, RetryPolicy, RunTrigger, ScheduleSpec, TimeoutReason};
use flexcore_cron::Calendar;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::members::Members;
use crate::timers::{Key, Timers};

/// A command the scheduler wants sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `run.request` for a slot (the run id derives from it).
    Fire {
        /// The schedule.
        schedule_id: Uuid,
        /// Its pipeline.
        pipeline_id: Uuid,
        /// The slot.
        slot: DateTime<Utc>,
    },
    /// `schedule.skip_slot`.
    Skip {
        /// The schedule.
        schedule_id: Uuid,
        /// The slot.
        slot: DateTime<Utc>,
        /// Why.
        reason: &'static str,
    },
    /// `schedule.miss_slots`.
    Miss {
        /// The schedule.
        schedule_id: Uuid,
        /// The slots, oldest first.
        slots: Vec<DateTime<Utc>>,
    },
    /// `run.time_out`.
    TimeOut {
        /// The run.
        run_id: Uuid,
        /// Its current attempt.
        attempt: u32,
        /// Lease or run timeout.
        reason: TimeoutReason,
        /// The W3C `traceparent` of the run's latest event, so the command continues the
        /// run's trace (`None`: a trace of its own).
        traceparent: Option<String>,
        /// The run's correlation id (of its `run.requested`), so the time-out shares it.
        correlation_id: Option<String>,
    },
    /// `run.retry`.
    Retry {
        /// The run.
        run_id: Uuid,
        /// The attempt that failed.
        failed_attempt: u32,
        /// As for [`Action::TimeOut`]: the retry shows in the failed attempt's trace.
        traceparent: Option<String>,
        /// As for [`Action::TimeOut`].
        correlation_id: Option<String>,
    },
}

impl Action {
    /// The command the action sends.
    pub fn command(&self) -> &'static str {
        match self {
            Self::Fire { .. } => "run.request",
            Self::Skip { .. } => "schedule.skip_slot",
            Self::Miss { .. } => "schedule.miss_slots",
            Self::TimeOut { .. } => "run.time_out",
            Self::Retry { .. } => "run.retry",
        }
    }

    /// The trace this action's command continues, if any.
    pub fn traceparent(&self) -> Option<&str> {
        match self {
            Self::TimeOut { traceparent, .. } | Self::Retry { traceparent, .. } => traceparent.as_deref(),
            Self::Fire { .. } | Self::Skip { .. } | Self::Miss { .. } => None,
        }
    }
}

/// How a sent command ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Accepted (or an identical earlier command's reply).
    Done,
    /// Refused because the pipeline is at `max_active_runs`.
    PoolFull,
    /// Refused for another reason (someone else acted first, the aggregate moved on).
    Refused(String),
    /// Not delivered (no command service, timeouts) after retries.
    Failed(String),
}

/// Missed slots per `schedule.miss_slots` command.
pub const MISS_CHUNK: usize = 500;

/// Tunables of the core.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// How long non-owners wait past a deadline before acting.
    pub takeover_grace: Duration,
    /// How long after acting the same key is checked again if the log shows no effect.
    pub recheck_after: Duration,
    /// Most past slots examined per schedule per due timer.
    pub max_catchup_slots: usize,
}

#[derive(Debug)]
struct Pipeline {
    status: PipelineStatus,
    /// Runs of the pipeline that are not finished.
    active: HashSet<Uuid>,
    /// Runs this replica asked for whose `run.requested` has not been seen yet.
    requesting: HashSet<Uuid>,
}

impl Pipeline {
    fn new() -> Self {
        Self {
            status: PipelineStatus::Active,
            active: HashSet::new(),
            requesting: HashSet::new(),
        }
    }

    fn busy(&self) -> bool {
        !self.active.is_empty() || !self.requesting.is_empty()
    }
}

#[derive(Debug)]
struct Schedule {
    pipeline_id: Uuid,
    spec: ScheduleSpec,
    calendar: Option<Calendar>,
    status: ScheduleStatus,
    cursor: DateTime<Utc>,
    /// The cursor as the log alone moves it: `cursor` also moves past slots this replica
    /// acted on before the log shows the outcome (and back when a command fails), which
    /// a snapshot must not carry ([`Core::state`]).
    logged: DateTime<Utc>,
    buffered: Option<DateTime<Utc>>,
}

impl Schedule {
    /// The log shows an outcome for every slot up to `at`.
    fn logged_up_to(&mut self, at: DateTime<Utc>) {
        self.cursor = self.cursor.max(at);
        self.logged = self.logged.max(at);
    }
}

#[derive(Debug)]
struct Run {
    pipeline_id: Uuid,
    attempt: u32,
    status: RunStatus,
    retry: RetryPolicy,
    timeout_at: Option<DateTime<Utc>>,
    lease: Duration,
    last_seen: DateTime<Utc>,
    retry_at: Option<DateTime<Utc>>,
    /// `traceparent` of the latest event that carried one.
    traceparent: Option<String>,
    /// Correlation id of the run's request: everything the run causes shares it.
    correlation_id: Option<String>,
}

/// The log-derived part of a [`Core`] ([`Core::state`]), as a snapshot carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Every schedule not deleted.
    pub schedules: Vec<ScheduleState>,
    /// Every pipeline seen, with its unfinished runs.
    pub pipelines: Vec<PipelineState>,
    /// Every unfinished run.
    pub runs: Vec<RunState>,
}

/// A schedule in a [`State`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleState {
    /// The schedule.
    pub id: Uuid,
    /// Its pipeline.
    pub pipeline_id: Uuid,
    /// Its timing and policies.
    pub spec: ScheduleSpec,
    /// Its status.
    pub status: ScheduleStatus,
    /// Every slot up to here has an outcome in the log (or predates the schedule).
    pub cursor: DateTime<Utc>,
}

/// A pipeline in a [`State`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineState {
    /// The pipeline.
    pub id: Uuid,
    /// Its status.
    pub status: PipelineStatus,
    /// Its unfinished runs.
    pub active: Vec<Uuid>,
}

/// An unfinished run in a [`State`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunState {
    /// The run.
    pub id: Uuid,
    /// Its pipeline.
    pub pipeline_id: Uuid,
    /// Its current attempt.
    pub attempt: u32,
    /// Its status.
    pub status: RunStatus,
    /// The retry policy of its definition.
    pub retry: RetryPolicy,
    /// When it times out for good, if its pipeline has a run timeout.
    pub timeout_at: Option<DateTime<Utc>>,
    /// Its attempt's lease, in milliseconds.
    pub lease_ms: i64,
    /// Its last sign of life.
    pub last_seen: DateTime<Utc>,
    /// When it is retried, while it awaits a retry.
    pub retry_at: Option<DateTime<Utc>>,
    /// `traceparent` of the latest event that carried one.
    pub traceparent: Option<String>,
    /// Correlation id of its request.
    pub correlation_id: Option<String>,
}

/// Everything one replica knows.
#[derive(Debug)]
pub struct Core {
    tuning: Tuning,
    members: Members,
    schedules: HashMap<Uuid, Schedule>,
    pipelines: HashMap<Uuid, Pipeline>,
    runs: HashMap<Uuid, Run>,
    /// Schedules that buffered a slot (a superset: entries are dropped when found empty),
    /// so an idle pipeline does not scan every schedule.
    buffering: HashSet<Uuid>,
    timers: Timers,
    live: bool,
}

impl Core {
    /// An empty core; timers stay disarmed until [`Core::go_live`].
    pub fn new(tuning: Tuning, members: Members) -> Self {
        Self {
            tuning,
            members,
            schedules: HashMap::new(),
            pipelines: HashMap::new(),
            runs: HashMap::new(),
            buffering: HashSet::new(),
            timers: Timers::default(),
            live: false,
        }
    }

    /// True once the log has been replayed.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// The earliest armed deadline.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.timers.next()
    }

    /// Schedules, active runs and armed timers (for logs and tests).
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.schedules.len(), self.runs.len(), self.timers.len())
    }

    /// The membership view.
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// What the log folded so far says, and nothing this replica decided or heard: the
    /// cursors as the log moves them, no buffered slot, no run this replica is requesting,
    /// no timer. A core [`restored`](Self::restore) from it and fed the rest of the log is
    /// the core a replay of the whole log gives (heartbeats aside, which only postpone a
    /// lease expiry and are superseded when the restored core goes live).
    pub fn state(&self) -> State {
        let mut schedules: Vec<ScheduleState> = self
            .schedules
            .iter()
            .map(|(id, s)| ScheduleState {
                id: *id,
                pipeline_id: s.pipeline_id,
                spec: s.spec.clone(),
                status: s.status,
                cursor: s.logged,
            })
            .collect();
        schedules.sort_by_key(|s| s.id);
        let mut pipelines: Vec<PipelineState> = self
            .pipelines
            .iter()
            .map(|(id, p)| {
                let mut active: Vec<Uuid> = p.active.iter().copied().collect();
                active.sort();
                PipelineState {
                    id: *id,
                    status: p.status,
                    active,
                }
            })
            .collect();
        pipelines.sort_by_key(|p| p.id);
        let mut runs: Vec<RunState> = self
            .runs
            .iter()
            .map(|(id, r)| RunState {
                id: *id,
                pipeline_id: r.pipeline_id,
                attempt: r.attempt,
                status: r.status,
                retry: r.retry.clone(),
                timeout_at: r.timeout_at,
                lease_ms: r.lease.num_milliseconds(),
                last_seen: r.last_seen,
                retry_at: r.retry_at,
                traceparent: r.traceparent.clone(),
                correlation_id: r.correlation_id.clone(),
            })
            .collect();
        runs.sort_by_key(|r| r.id);
        State {
            schedules,
            pipelines,
            runs,
        }
    }

    /// A core that has folded the log as far as `state` was taken ([`Self::state`]); not
    /// live, so the rest of the log follows before anything is armed.
    pub fn restore(tuning: Tuning, members: Members, state: State) -> Self {
        let mut core = Self::new(tuning, members);
        for s in state.schedules {
            core.schedules.insert(
                s.id,
                Schedule {
                    pipeline_id: s.pipeline_id,
                    calendar: Calendar::new(&s.spec).ok(),
                    spec: s.spec,
                    status: s.status,
                    cursor: s.cursor,
                    logged: s.cursor,
                    buffered: None,
                },
            );
        }
        for p in state.pipelines {
            core.pipelines.insert(
                p.id,
                Pipeline {
                    status: p.status,
                    active: p.active.into_iter().collect(),
                    requesting: HashSet::new(),
                },
            );
        }
        for r in state.runs {
            core.runs.insert(
                r.id,
                Run {
                    pipeline_id: r.pipeline_id,
                    attempt: r.attempt,
                    status: r.status,
                    retry: r.retry,
                    timeout_at: r.timeout_at,
                    lease: Duration::milliseconds(r.lease_ms),
                    last_seen: r.last_seen,
                    retry_at: r.retry_at,
                    traceparent: r.traceparent,
                    correlation_id: r.correlation_id,
                },
            );
        }
        core
    }

    /// The log is replayed: running attempts get a full lease from now (their heartbeats
    /// were not watched while this replica was down) and every timer is armed.
    pub fn go_live(&mut self, now: DateTime<Utc>) {
        self.live = true;
        self.heartbeats_missed(now);
    }

    /// Heartbeats could not arrive (the NATS connection was down): every running attempt
    /// gets a full lease from `now`, so an outage longer than a lease does not time out
    /// attempts whose runners are alive and waiting to report.
    pub fn heartbeats_missed(&mut self, now: DateTime<Utc>) {
        for run in self.runs.values_mut() {
            if run.status == RunStatus::Running {
                run.last_seen = run.last_seen.max(now);
            }
        }
        self.rearm_all();
    }

    /// A presence announcement.
    pub fn heard(&mut self, instance: &str, alive: bool, now: Instant) {
        if self.members.heard(instance, alive, now) {
            self.rearm_all();
        }
    }

    /// Drops silent replicas.
    pub fn expire_members(&mut self, now: Instant) {
        if self.members.expire(now) {
            self.rearm_all();
        }
    }

    /// A runner's heartbeat for `attempt` of `run_id`.
    pub fn heartbeat(&mut self, run_id: Uuid, attempt: u32, now: DateTime<Utc>) {
        if let Some(run) = self.runs.get_mut(&run_id) {
            if run.attempt == attempt && run.status == RunStatus::Running {
                run.last_seen = run.last_seen.max(now);
                self.rearm(Key::Run(run_id));
            }
        }
    }

    /// Folds one event of the log. Events of the aggregates the scheduler keeps (schedules,
    /// pipelines, runs) must decode: one that does not is an error and changes nothing,
    /// and the caller stops rather than fold on past it. Plugin events, and those of any
    /// aggregate type it does not keep, are not its to read.
    pub fn apply(&mut self, e: &EventEnvelope) -> Result<(), UndecodableEvent> {
        let undecodable = |error| UndecodableEvent {
            global_position: e.global_position,
            aggregate_id: e.aggregate_id,
            event_type: e.event_type.clone(),
            error,
        };
        match e.aggregate_type.as_str() {
            ScheduleEvent::AGGREGATE_TYPE => {
                let event =
                    ScheduleEvent::from_stored(&e.event_type, e.schema_version, &e.data).map_err(undecodable)?;
                self.apply_schedule(e.aggregate_id, e.recorded_at, event);
                self.rearm(Key::Schedule(e.aggregate_id));
            }
            PipelineEvent::AGGREGATE_TYPE => {
                let event =
                    PipelineEvent::from_stored(&e.event_type, e.schema_version, &e.data).map_err(undecodable)?;
                self.apply_pipeline(e.aggregate_id, event);
            }
            RunEvent::AGGREGATE_TYPE => {
                let event = RunEvent::from_stored(&e.event_type, e.schema_version, &e.data).map_err(undecodable)?;
                let requested = matches!(event, RunEvent::Requested(_));
                self.apply_run(e.aggregate_id, e.recorded_at, event);
                if let Some(run) = self.runs.get_mut(&e.aggregate_id) {
                    if let Some(traceparent) = &e.metadata.traceparent {
                        run.traceparent = Some(traceparent.clone());
                    }
                    if requested {
                        run.correlation_id = e.metadata.correlation_id.clone();
                    }
                }
                self.rearm(Key::Run(e.aggregate_id));
            }
            _ => {}
        }
        Ok(())
    }

    fn apply_schedule(&mut self, id: Uuid, at: DateTime<Utc>, event: ScheduleEvent) {
        if let (Some(status), ScheduleEvent::Created(c)) = (ScheduleStatus::initial(&event), &event) {
            self.schedules.insert(
                id,
                Schedule {
                    pipeline_id: c.pipeline_id,
                    calendar: Calendar::new(&c.spec).ok(),
                    spec: c.spec.clone(),
                    status,
                    cursor: at,
                    logged: at,
                    buffered: None,
                },
            );
            return;
        }
        let Some(s) = self.schedules.get_mut(&id) else {
            return;
        };
        s.status = s.status.after(&event);
        match event {
            ScheduleEvent::Created(_) => {}
            // A changed spec starts from now: the old spec's last slot is not re-run.
            ScheduleEvent::Updated(u) => {
                s.calendar = Calendar::new(&u.spec).ok();
                s.spec = u.spec;
                s.logged_up_to(at);
            }
            ScheduleEvent::Paused(_) => s.buffered = None,
            // Slots passed while paused are not caught up.
            ScheduleEvent::Resumed(_) => s.logged_up_to(at),
            ScheduleEvent::Deleted(_) => {
                self.schedules.remove(&id);
            }
            ScheduleEvent::SlotSkipped(k) => s.logged_up_to(k.slot),
            ScheduleEvent::SlotsMissed(m) => {
                if let Some(last) = m.slots.iter().max() {
                    s.logged_up_to(*last);
                }
            }
        }
    }

    fn apply_pipeline(&mut self, id: Uuid, event: PipelineEvent) {
        let pipeline = self.pipelines.entry(id).or_insert_with(Pipeline::new);
        pipeline.status = pipeline.status.after(&event);
    }

    fn apply_run(&mut self, id: Uuid, at: DateTime<Utc>, event: RunEvent) {
        if let RunEvent::Requested(r) = &event {
            let pipeline = self.pipelines.entry(r.pipeline_id).or_insert_with(Pipeline::new);
            pipeline.active.insert(id);
            pipeline.requesting.remove(&id);
            if let (Some(schedule_id), Some(slot), RunTrigger::Schedule) = (r.schedule_id, r.scheduled_for, r.trigger) {
                if let Some(s) = self.schedules.get_mut(&schedule_id) {
                    s.logged_up_to(slot);
                    if s.buffered == Some(slot) {
                        s.buffered = None;
                    }
                }
            }
            let timeout = r.definition.run_timeout_seconds;
            self.runs.insert(
                id,
                Run {
                    pipeline_id: r.pipeline_id,
                    attempt: r.attempt,
                    status: RunStatus::Requested,
                    retry: r.definition.retry.clone(),
                    timeout_at: (timeout > 0).then(|| at + seconds(timeout)),
                    lease: Duration::zero(),
                    last_seen: at,
                    retry_at: None,
                    traceparent: None,
                    correlation_id: None,
                },
            );
            return;
        }
        let Some(run) = self.runs.get_mut(&id) else {
            return;
        };
        run.status = run.status.after(&event);
        match event {
            RunEvent::Requested(_) | RunEvent::Succeeded(_) | RunEvent::Cancelled(_) => {}
            RunEvent::Claimed(c) => {
                run.attempt = c.attempt;
                run.lease = seconds(c.lease_seconds);
                run.last_seen = at;
            }
            RunEvent::Checkpointed(_) => run.last_seen = run.last_seen.max(at),
            RunEvent::Failed(f) => run.retry_after(id, f.attempt, at),
            RunEvent::TimedOut(t) => run.retry_after(id, t.attempt, at),
            RunEvent::Retried(r) => {
                run.attempt = r.attempt;
                run.retry_at = None;
            }
        }
        if run.status.is_terminal() {
            let pipeline_id = run.pipeline_id;
            self.runs.remove(&id);
            let idle = self.pipelines.get_mut(&pipeline_id).is_some_and(|p| {
                p.active.remove(&id);
                !p.busy()
            });
            if idle {
                self.release_buffered(pipeline_id);
            }
        }
    }

    /// The pipeline became idle: its schedules' buffered slots are due now.
    fn release_buffered(&mut self, pipeline_id: Uuid) {
        let schedules = &self.schedules;
        self.buffering
            .retain(|id| schedules.get(id).is_some_and(|s| s.buffered.is_some()));
        let waiting: Vec<Uuid> = self
            .buffering
            .iter()
            .filter(|id| schedules.get(*id).is_some_and(|s| s.pipeline_id == pipeline_id))
            .copied()
            .collect();
        for id in waiting {
            self.rearm(Key::Schedule(id));
        }
    }

    /// A command sent for `action` ended with `outcome`; returns follow-up actions.
    pub fn outcome(&mut self, action: &Action, outcome: &Outcome, now: DateTime<Utc>) -> Vec<Action> {
        if let Action::Fire {
            schedule_id,
            pipeline_id,
            slot,
        } = action
        {
            if outcome != &Outcome::Done {
                if let Some(p) = self.pipelines.get_mut(pipeline_id) {
                    p.requesting.remove(&scheduled_run_id(*schedule_id, *slot));
                }
            }
            if outcome == &Outcome::PoolFull {
                return vec![Action::Skip {
                    schedule_id: *schedule_id,
                    slot: *slot,
                    reason: "max_active_runs",
                }];
            }
        }
        if let Outcome::Failed(_) = outcome {
            // Not delivered: put the slots back and try again soon (commands are idempotent).
            match action {
                Action::Fire { schedule_id, slot, .. } | Action::Skip { schedule_id, slot, .. } => {
                    self.rewind(*schedule_id, *slot)
                }
                Action::Miss { schedule_id, slots } => {
                    if let Some(first) = slots.first() {
                        self.rewind(*schedule_id, *first);
                    }
                }
                Action::TimeOut { .. } | Action::Retry { .. } => {}
            }
            self.timers.set(action_key(action), Some(now + Duration::seconds(1)));
        }
        Vec::new()
    }

    /// Puts a slot whose command could not be delivered back in front of the cursor.
    fn rewind(&mut self, schedule_id: Uuid, slot: DateTime<Utc>) {
        if let Some(s) = self.schedules.get_mut(&schedule_id) {
            s.cursor = s.cursor.min(slot - Duration::seconds(1));
        }
    }

    /// Everything due at `now`, as commands to send.
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<Action> {
        let mut actions = Vec::new();
        for key in self.timers.take_due(now) {
            match key {
                Key::Schedule(id) => self.schedule_due(id, now, &mut actions),
                Key::Run(id) => self.run_due(id, now, &mut actions),
            }
            // A schedule's cursor moved past what was acted on; a run's state changes only
            // when the log shows the effect, so it is checked again a while later.
            let acted = actions.last().is_some_and(|a| action_key(a) == key);
            let next = match key {
                Key::Run(_) if acted => Some(now + self.tuning.recheck_after),
                _ => self.deadline(key).map(|d| d.max(now)),
            };
            self.timers.set(key, next);
        }
        actions
    }

    fn schedule_due(&mut self, id: Uuid, now: DateTime<Utc>, actions: &mut Vec<Action>) {
        let grace = self.tuning.takeover_grace;
        let limit = self.tuning.max_catchup_slots;
        // Another replica's slots are taken over only once they are a grace late.
        let now = now - self.lateness(id);
        let Some(s) = self.schedules.get_mut(&id) else {
            return;
        };
        if s.status != ScheduleStatus::Active {
            return;
        }
        let Some(calendar) = &s.calendar else {
            return;
        };
        let pipeline = self.pipelines.entry(s.pipeline_id).or_insert_with(Pipeline::new);
        // A buffered slot fires once the pipeline is idle.
        if let Some(slot) = s.buffered {
            if !pipeline.busy() {
                s.buffered = None;
                pipeline.requesting.insert(scheduled_run_id(id, slot));
                actions.push(Action::Fire {
                    schedule_id: id,
                    pipeline_id: s.pipeline_id,
                    slot,
                });
            }
        }
        let jitter = |t: DateTime<Utc>| t + flexcore_cron::jitter(id, t, s.spec.jitter_seconds);
        let mut due: Vec<DateTime<Utc>> = calendar.slots_between(s.cursor, now, limit);
        if let Some(first_not_due) = due.iter().position(|t| jitter(*t) > now) {
            due.truncate(first_not_due);
        }
        let Some(&last) = due.last() else {
            return;
        };
        s.cursor = last;
        let horizon = now - seconds(s.spec.catchup_window_seconds) - grace;
        let cap = s.spec.catchup_cap.max(1) as usize;
        let mut missed: Vec<DateTime<Utc>> = due.iter().copied().filter(|t| *t < horizon).collect();
        let mut fire: Vec<DateTime<Utc>> = due.into_iter().filter(|t| *t >= horizon).collect();
        if fire.len() > cap {
            missed.extend(fire.drain(..fire.len() - cap));
            missed.sort();
        }
        for chunk in missed.chunks(MISS_CHUNK) {
            actions.push(Action::Miss {
                schedule_id: id,
                slots: chunk.to_vec(),
            });
        }
        for slot in fire {
            let skip = |reason| Action::Skip {
                schedule_id: id,
                slot,
                reason,
            };
            let action = match pipeline.status {
                PipelineStatus::Paused => skip("pipeline_paused"),
                PipelineStatus::Archived => skip("pipeline_archived"),
                PipelineStatus::Active => match s.spec.overlap {
                    OverlapPolicy::Skip if pipeline.busy() => skip("overlap"),
                    OverlapPolicy::BufferOne if pipeline.busy() => {
                        if s.buffered.is_none() {
                            s.buffered = Some(slot);
                            self.buffering.insert(id);
                            continue;
                        }
                        skip("overlap")
                    }
                    _ => {
                        pipeline.requesting.insert(scheduled_run_id(id, slot));
                        Action::Fire {
                            schedule_id: id,
                            pipeline_id: s.pipeline_id,
                            slot,
                        }
                    }
                },
            };
            actions.push(action);
        }
    }

    fn run_due(&mut self, id: Uuid, now: DateTime<Utc>, actions: &mut Vec<Action>) {
        let now = now - self.lateness(id);
        let Some(run) = self.runs.get(&id) else {
            return;
        };
        let (run_id, attempt, traceparent) = (id, run.attempt, run.traceparent.clone());
        let correlation_id = run.correlation_id.clone();
        if run.timeout_at.is_some_and(|t| t <= now) {
            actions.push(Action::TimeOut {
                run_id,
                attempt,
                reason: TimeoutReason::RunTimeout,
                traceparent,
                correlation_id,
            });
        } else if run.status == RunStatus::Running && run.last_seen + run.lease <= now {
            actions.push(Action::TimeOut {
                run_id,
                attempt,
                reason: TimeoutReason::LeaseExpired,
                traceparent,
                correlation_id,
            });
        } else if run.status == RunStatus::AwaitingRetry && run.retry_at.is_some_and(|t| t <= now) {
            actions.push(Action::Retry {
                run_id,
                failed_attempt: attempt,
                traceparent,
                correlation_id,
            });
        }
    }

    /// When `key` needs attention next, shifted by the grace when another replica owns it.
    fn deadline(&self, key: Key) -> Option<DateTime<Utc>> {
        if !self.live {
            return None;
        }
        let at = match key {
            Key::Schedule(id) => {
                let s = self.schedules.get(&id)?;
                if s.status != ScheduleStatus::Active {
                    return None;
                }
                let idle = self.pipelines.get(&s.pipeline_id).is_none_or(|p| !p.busy());
                match s.buffered {
                    Some(slot) if idle => slot,
                    _ => {
                        let next = s.calendar.as_ref()?.next_after(s.cursor)?;
                        next + flexcore_cron::jitter(id, next, s.spec.jitter_seconds)
                    }
                }
            }
            Key::Run(id) => {
                let run = self.runs.get(&id)?;
                let lease = (run.status == RunStatus::Running).then(|| run.last_seen + run.lease);
                let retry = run.retry_at.filter(|_| run.status == RunStatus::AwaitingRetry);
                min_opt(min_opt(lease, retry), run.timeout_at)?
            }
        };
        Some(at + self.lateness(key.id()))
    }

    /// How late this replica acts on `id`: at once when it owns it, else after the grace.
    fn lateness(&self, id: Uuid) -> Duration {
        if self.members.owns(id) {
            Duration::zero()
        } else {
            self.tuning.takeover_grace
        }
    }

    fn rearm(&mut self, key: Key) {
        let at = self.deadline(key);
        self.timers.set(key, at);
    }

    fn rearm_all(&mut self) {
        let keys: Vec<Key> = self
            .schedules
            .keys()
            .map(|id| Key::Schedule(*id))
            .chain(self.runs.keys().map(|id| Key::Run(*id)))
            .collect();
        for key in keys {
            self.rearm(key);
        }
    }
}

impl Run {
    /// After a failure or timeout of `attempt`: retry at `at` plus the back-off (unless
    /// the event was final: the caller removes the run then).
    fn retry_after(&mut self, id: Uuid, attempt: u32, at: DateTime<Utc>) {
        let backoff = Duration::from_std(self.retry.backoff(attempt, id)).unwrap_or(Duration::MAX);
        self.retry_at = Some(at.checked_add_signed(backoff).unwrap_or(DateTime::<Utc>::MAX_UTC));
    }
}

/// An event of an aggregate the scheduler keeps that it cannot decode (unknown type,
/// data that does not match, a newer schema version): a damaged log or a writer newer
/// than this build.
#[derive(Debug)]
pub struct UndecodableEvent {
    /// Its position in the log.
    pub global_position: u64,
    /// Its aggregate.
    pub aggregate_id: Uuid,
    /// Its stored type.
    pub event_type: String,
    /// Why it does not decode (part of the message, so not also a `source()`).
    pub error: EventDecodeError,
}

impl std::fmt::Display for UndecodableEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "event {} at global position {} (aggregate {}) cannot be decoded: {}",
            self.event_type, self.global_position, self.aggregate_id, self.error
        )
    }
}

impl std::error::Error for UndecodableEvent {}

fn action_key(a: &Action) -> Key {
    match a {
        Action::Fire { schedule_id, .. } | Action::Skip { schedule_id, .. } | Action::Miss { schedule_id, .. } => {
            Key::Schedule(*schedule_id)
        }
        Action::TimeOut { run_id, .. } | Action::Retry { run_id, .. } => Key::Run(*run_id),
    }
}

fn seconds(s: u64) -> Duration {
    Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000))
}

fn min_opt(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
