//! NATS subjects and JetStream stream names. Call sites never `format!` a subject.
//!
//! Commands: `flexcore.cmd.<aggregate>.<action>`; events:
//! `flexcore.evt.<aggregate>.<aggregate_id>.<event_name>`; queries:
//! `flexcore.qry.<view>.<operation>`; run work: `flexcore.work.run.<run_id>`.

use uuid::Uuid;

/// Root token of every FlexCore subject.
pub const ROOT: &str = "flexcore";
/// Wildcard served by the command service (as a queue group).
pub const COMMANDS_WILDCARD: &str = "flexcore.cmd.>";
/// Queue group shared by every command-service replica.
pub const COMMAND_QUEUE_GROUP: &str = "flexcore-command";
/// Wildcard of every event subject (the subjects of [`EVENTS_STREAM`]).
pub const EVENTS_WILDCARD: &str = "flexcore.evt.>";
/// JetStream stream that carries every event, in global order.
pub const EVENTS_STREAM: &str = "FLEXCORE_EVENTS";
/// Wildcard served by the projection service.
pub const QUERIES_WILDCARD: &str = "flexcore.qry.>";
/// Queue group shared by every projection-service replica.
pub const QUERY_QUEUE_GROUP: &str = "flexcore-projection";
/// Wildcard of the projection services' position announcements.
pub const PROJECTION_POSITIONS_WILDCARD: &str = "flexcore.sys.projection.*.position";
/// JetStream work-queue stream of runs to execute.
pub const WORK_STREAM: &str = "FLEXCORE_WORK";
/// Wildcard of every run work item (the subjects of [`WORK_STREAM`]).
pub const WORK_WILDCARD: &str = "flexcore.work.run.*";

/// JetStream stream holding plugin log lines of runs (`flexcore.log.run.<run_id>`).
pub const LOGS_STREAM: &str = "FLEXCORE_LOGS";
/// Wildcard of every run log subject.
pub const LOGS_WILDCARD: &str = "flexcore.log.run.*";

/// Subject of a run's plugin log lines: `flexcore.log.run.<run_id>`.
pub fn run_logs(run_id: Uuid) -> String {
    format!("{ROOT}.log.run.{run_id}")
}

/// Subject of a command: `flexcore.cmd.<aggregate>.<action>`.
pub fn command(aggregate: &str, action: &str) -> String {
    format!("{ROOT}.cmd.{aggregate}.{action}")
}

/// Splits a command subject into `(aggregate, action)`; `None` when it is not one.
pub fn parse_command(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix("flexcore.cmd.")?;
    let (aggregate, action) = rest.split_once('.')?;
    if aggregate.is_empty() || action.is_empty() || action.contains('.') {
        return None;
    }
    Some((aggregate, action))
}

/// Subject of an event: `flexcore.evt.<aggregate>.<aggregate_id>.<event_name>`, where
/// `event_name` is the event type without its aggregate prefix (`created` for
/// `pipeline.created`).
pub fn event(aggregate_type: &str, aggregate_id: Uuid, event_type: &str) -> String {
    let name = event_type
        .strip_prefix(aggregate_type)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(event_type);
    format!("{ROOT}.evt.{aggregate_type}.{aggregate_id}.{name}")
}

/// Filter subject for every event of one aggregate type: `flexcore.evt.<aggregate>.>`.
pub fn events_of_type(aggregate_type: &str) -> String {
    format!("{ROOT}.evt.{aggregate_type}.>")
}

/// Filter subject for every event of one aggregate: `flexcore.evt.<aggregate>.<id>.*`.
pub fn events_of_aggregate(aggregate_type: &str, aggregate_id: Uuid) -> String {
    format!("{ROOT}.evt.{aggregate_type}.{aggregate_id}.*")
}

/// Subject of a query: `flexcore.qry.<view>.<operation>`.
pub fn query(view: &str, operation: &str) -> String {
    format!("{ROOT}.qry.{view}.{operation}")
}

/// Splits a query subject into `(view, operation)`; `None` when it is not one.
pub fn parse_query(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix("flexcore.qry.")?;
    let (view, operation) = rest.split_once('.')?;
    if view.is_empty() || operation.is_empty() || operation.contains('.') {
        return None;
    }
    Some((view, operation))
}

/// Subject on which a projection's leader announces its new checkpoint after each commit:
/// `flexcore.sys.projection.<name>.position` (core NATS; replicas use it to answer
/// `min_position` waits without polling).
pub fn projection_position(name: &str) -> String {
    format!("{ROOT}.sys.projection.{name}.position")
}

/// Subject of a runner's heartbeat for a claimed attempt: `flexcore.sys.run.<run_id>.heartbeat`
/// (core NATS; schedulers time out attempts whose heartbeats stop).
pub fn run_heartbeat(run_id: Uuid) -> String {
    format!("{ROOT}.sys.run.{run_id}.heartbeat")
}

/// Wildcard of every run heartbeat.
pub const RUN_HEARTBEATS_WILDCARD: &str = "flexcore.sys.run.*.heartbeat";

/// Subject on which every scheduler replica announces itself (core NATS): replicas share
/// slots and timers out among the replicas they hear.
pub const SCHEDULER_PRESENCE: &str = "flexcore.sys.scheduler.presence";

/// JetStream stream holding the scheduler's latest snapshot, one message per subject
/// (`flexcore.state.scheduler.<chunk>`): a replica starts from it instead of replaying the
/// whole event log (docs/architecture.md, "Scheduler snapshots").
pub const SCHEDULER_STATE_STREAM: &str = "FLEXCORE_SCHEDULER";
/// Wildcard of the scheduler snapshot's chunks (the subjects of [`SCHEDULER_STATE_STREAM`]).
pub const SCHEDULER_STATE_WILDCARD: &str = "flexcore.state.scheduler.*";

/// Subject of chunk `index` of the scheduler's snapshot: `flexcore.state.scheduler.<index>`
/// (0 is the manifest, written last).
pub fn scheduler_state(index: u32) -> String {
    format!("{ROOT}.state.scheduler.{index}")
}

/// Subject on which every runner announces its slots (core NATS), for `flexctl status`.
pub const RUNNER_PRESENCE: &str = "flexcore.sys.runner.presence";

/// Subject of a run's work item: `flexcore.work.run.<run_id>`.
pub fn work_run(run_id: Uuid) -> String {
    format!("{ROOT}.work.run.{run_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_subjects_round_trip() {
        let s = command("pipeline", "create");
        assert_eq!(s, "flexcore.cmd.pipeline.create");
        assert_eq!(parse_command(&s), Some(("pipeline", "create")));
        assert_eq!(parse_command("flexcore.cmd.pipeline"), None);
        assert_eq!(parse_command("flexcore.cmd.pipeline.create.extra"), None);
        assert_eq!(parse_command("other.cmd.pipeline.create"), None);
    }

    #[test]
    fn event_subject_drops_aggregate_prefix() {
        let id = Uuid::nil();
        assert_eq!(
            event("pipeline", id, "pipeline.state_committed"),
            format!("flexcore.evt.pipeline.{id}.state_committed")
        );
    }

    #[test]
    fn scheduler_snapshot_chunks_are_the_subjects_of_their_stream_and_no_other() {
        assert_eq!(scheduler_state(0), "flexcore.state.scheduler.0");
        assert_eq!(
            SCHEDULER_STATE_WILDCARD.rsplit_once('.').map(|(prefix, _)| prefix),
            scheduler_state(7).rsplit_once('.').map(|(prefix, _)| prefix)
        );
        assert!(!scheduler_state(1).starts_with("flexcore.sys."));
    }
}
