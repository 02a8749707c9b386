//! The event log as the test reads it from Postgres, and the checks made on the log alone
//! or against the load's [`Ledger`]: every acknowledged command's events are there, no
//! command's events are there twice, a refused command wrote nothing, and no run or
//! schedule slot has duplicate effects.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use flexcore_contracts::events::{RunRequested, ScheduleSlotSkipped};
use flexcore_contracts::reply::Accepted;
use flexcore_contracts::EventMetadata;
use sqlx::{PgPool, Row as _};
use uuid::Uuid;

use super::load::{Ledger, Outcome};

/// One row of `events`.
#[derive(Debug, Clone)]
pub struct LogEvent {
    /// `global_position`.
    pub position: i64,
    /// `transaction_id` (xid8).
    pub transaction: u64,
    /// `event_id`.
    pub event_id: Uuid,
    /// `aggregate_type`.
    pub aggregate_type: String,
    /// `aggregate_id`.
    pub aggregate_id: Uuid,
    /// `version`.
    pub version: i64,
    /// `event_type`.
    pub event_type: String,
    /// `schema_version`.
    pub schema_version: i32,
    /// `data`, its exact text.
    pub data: String,
    /// `metadata`.
    pub metadata: EventMetadata,
    /// `recorded_at`.
    pub recorded_at: DateTime<Utc>,
}

impl LogEvent {
    /// The payload as `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("{} at {}: {e}: {}", self.event_type, self.position, self.data))
    }

    /// The command that wrote it.
    pub fn command(&self) -> Option<Uuid> {
        self.metadata.causation_id
    }
}

/// The whole log in its reading order (transaction, then position).
pub async fn read(db: &PgPool) -> Vec<LogEvent> {
    let rows = sqlx::query(
        "SELECT global_position, transaction_id::text AS tx, event_id, aggregate_type, aggregate_id, version, \
                event_type, schema_version, data::text AS data, metadata::text AS metadata, recorded_at \
           FROM events ORDER BY transaction_id, global_position",
    )
    .fetch_all(db)
    .await
    .unwrap();
    rows.iter()
        .map(|r| LogEvent {
            position: r.get("global_position"),
            transaction: r.get::<String, _>("tx").parse().unwrap(),
            event_id: r.get("event_id"),
            aggregate_type: r.get("aggregate_type"),
            aggregate_id: r.get("aggregate_id"),
            version: r.get("version"),
            event_type: r.get("event_type"),
            schema_version: r.get("schema_version"),
            data: r.get("data"),
            metadata: serde_json::from_str(&r.get::<String, _>("metadata")).unwrap(),
            recorded_at: r.get("recorded_at"),
        })
        .collect()
}

/// The command log: each processed command id's stored reply.
pub async fn command_log(db: &PgPool) -> HashMap<Uuid, serde_json::Value> {
    let rows = sqlx::query("SELECT command_id, reply FROM command_log")
        .fetch_all(db)
        .await
        .unwrap();
    rows.iter().map(|r| (r.get("command_id"), r.get("reply"))).collect()
}

/// Every acknowledged command of the ledger has exactly the events its reply named, in
/// one transaction, at the position it named, and its stored reply is the one the client
/// got; every refused command wrote nothing; every command was answered.
pub fn acknowledged(ledger: &Ledger, log: &[LogEvent], commands: &HashMap<Uuid, serde_json::Value>) -> Vec<String> {
    let mut by_command: HashMap<Uuid, Vec<&LogEvent>> = HashMap::new();
    for event in log {
        if let Some(id) = event.command() {
            by_command.entry(id).or_default().push(event);
        }
    }
    let mut problems = Vec::new();
    for sent in ledger.entries() {
        let written = by_command.get(&sent.command_id).map(Vec::as_slice).unwrap_or_default();
        match &sent.outcome {
            Outcome::Unanswered(why) => {
                problems.push(format!("{} {} never answered: {why}", sent.name, sent.command_id))
            }
            Outcome::Refused(error) => {
                if !written.is_empty() || commands.contains_key(&sent.command_id) {
                    problems.push(format!(
                        "{} {} was refused ({error:?}) yet wrote {} events",
                        sent.name,
                        sent.command_id,
                        written.len()
                    ));
                }
            }
            Outcome::Accepted(reply) => {
                let mut sorted: Vec<&LogEvent> = written.to_vec();
                sorted.sort_by_key(|e| e.position);
                let got: Vec<(Uuid, &str, i64)> = sorted
                    .iter()
                    .map(|e| (e.event_id, e.event_type.as_str(), e.version))
                    .collect();
                let named: Vec<(Uuid, &str, i64)> = reply
                    .events
                    .iter()
                    .map(|e| (e.event_id, e.event_type.as_str(), e.version as i64))
                    .collect();
                if got != named {
                    problems.push(format!(
                        "{} {} acknowledged {named:?} but the log holds {got:?}",
                        sent.name, sent.command_id
                    ));
                    continue;
                }
                if let Some(last) = sorted.last() {
                    if last.position as u64 != reply.global_position {
                        problems.push(format!(
                            "{} {}: reply position {} but the last event is at {}",
                            sent.name, sent.command_id, reply.global_position, last.position
                        ));
                    }
                }
                match commands
                    .get(&sent.command_id)
                    .map(|r| serde_json::from_value::<Accepted>(r.clone()))
                {
                    Some(Ok(stored)) if &stored == reply => {}
                    other => problems.push(format!(
                        "{} {}: the command log holds {other:?}, the client got {reply:?}",
                        sent.name, sent.command_id
                    )),
                }
            }
        }
    }
    problems
}

/// No command's events appear twice: all events of one `command_id` come from one
/// transaction and are exactly the events its command-log reply names; every event has a
/// command id.
pub fn no_duplicates(log: &[LogEvent], commands: &HashMap<Uuid, serde_json::Value>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut by_command: BTreeMap<Uuid, Vec<&LogEvent>> = BTreeMap::new();
    for event in log {
        match event.command() {
            Some(id) => by_command.entry(id).or_default().push(event),
            None => problems.push(format!("{} at {} has no command id", event.event_type, event.position)),
        }
    }
    for (id, events) in &by_command {
        let transactions: BTreeSet<u64> = events.iter().map(|e| e.transaction).collect();
        let stored = commands
            .get(id)
            .and_then(|r| serde_json::from_value::<Accepted>(r.clone()).ok());
        let named: BTreeSet<Uuid> = stored
            .iter()
            .flat_map(|r| r.events.iter().map(|e| e.event_id))
            .collect();
        let written: BTreeSet<Uuid> = events.iter().map(|e| e.event_id).collect();
        if transactions.len() != 1 || named != written || events.len() != written.len() {
            let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
            problems.push(format!(
                "command {id}: {} events {types:?} in {} transactions; its command-log reply names {}",
                events.len(),
                transactions.len(),
                named.len()
            ));
        }
    }
    problems
}

/// What the log says about each run, per attempt: no run requested twice, no attempt
/// claimed or ended twice, nothing after a run's final event, and no schedule slot fired
/// twice or both fired and skipped.
pub fn run_histories(log: &[LogEvent]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut events_of: BTreeMap<Uuid, Vec<&LogEvent>> = BTreeMap::new();
    for event in log.iter().filter(|e| e.aggregate_type == "run") {
        events_of.entry(event.aggregate_id).or_default().push(event);
    }
    let mut slots: BTreeMap<(Uuid, DateTime<Utc>), Vec<String>> = BTreeMap::new();
    for (run, events) in &mut events_of {
        events.sort_by_key(|e| e.version);
        let requested = events.iter().filter(|e| e.event_type == "run.requested").count();
        if requested != 1 || events[0].event_type != "run.requested" {
            problems.push(format!(
                "run {run}: {requested} run.requested, first event {}",
                events[0].event_type
            ));
            continue;
        }
        let first: RunRequested = events[0].decode();
        if let (Some(schedule), Some(slot)) = (first.schedule_id, first.scheduled_for) {
            slots.entry((schedule, slot)).or_default().push(format!("run {run}"));
        }
        let mut claimed: BTreeMap<u32, usize> = BTreeMap::new();
        let mut ended: BTreeMap<u32, usize> = BTreeMap::new();
        let mut final_at: Option<i64> = None;
        for event in events.iter() {
            if let Some(version) = final_at {
                problems.push(format!(
                    "run {run}: {} (version {}) after its final event (version {version})",
                    event.event_type, event.version
                ));
            }
            let data: serde_json::Value = event.decode();
            let attempt = data["attempt"].as_u64().unwrap_or(0) as u32;
            match event.event_type.as_str() {
                "run.claimed" => *claimed.entry(attempt).or_default() += 1,
                "run.succeeded" | "run.failed" | "run.timed_out" => *ended.entry(attempt).or_default() += 1,
                _ => {}
            }
            let is_final = match event.event_type.as_str() {
                "run.succeeded" | "run.cancelled" => true,
                "run.failed" | "run.timed_out" => data["final"] == serde_json::Value::Bool(true),
                _ => false,
            };
            if is_final {
                final_at = Some(event.version);
            }
        }
        for (attempt, n) in claimed.iter().chain(ended.iter()) {
            if *n > 1 {
                problems.push(format!("run {run}: attempt {attempt} claimed or ended {n} times"));
            }
        }
    }
    for event in log.iter().filter(|e| e.event_type == "schedule.slot_skipped") {
        let skipped: ScheduleSlotSkipped = event.decode();
        slots
            .entry((event.aggregate_id, skipped.slot))
            .or_default()
            .push(format!("skipped ({})", skipped.reason));
    }
    for ((schedule, slot), effects) in slots {
        if effects.len() > 1 {
            problems.push(format!("schedule {schedule} slot {slot}: {effects:?}"));
        }
    }
    problems
}

/// Every `run.failed`: the chaos pipelines never fail on their own, so each one is a
/// transient fault (NATS, Postgres or a service gone for a moment) that cost the run an
/// attempt instead of being waited out.
pub fn failed_attempts(log: &[LogEvent]) -> Vec<String> {
    log.iter()
        .filter(|e| e.event_type == "run.failed")
        .map(|e| format!("run {} failed at {}: {}", e.aggregate_id, e.recorded_at, e.data))
        .collect()
}
