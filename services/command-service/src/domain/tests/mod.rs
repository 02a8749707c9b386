//! Given/when/then tests of the domain. [`World`] is a tiny in-memory event store: given
//! events are folded with [`AggregateState::evolve`]; `when` loads exactly what
//! [`required`] asks for (round after round, like the service glue) and decides on it, so
//! every test also checks that `required` names everything the decision needs.

mod api;
mod pipeline;
mod pipeline_lifecycle;
mod plugin;
mod refusal_texts;
mod run;
mod schedule;

use std::collections::HashSet;

use flexcore_contracts::commands::Command;
use flexcore_contracts::ErrorCode;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{decide, required, target, AggRef, AggregateState, AnyEvent, Decision, DomainError, Loaded, Versioned};

pub const CSV: &str = "csv@1.0.0";
pub const MAP: &str = "map@1.0.0";
pub const JSONL: &str = "jsonl@1.0.0";
pub const PIPELINE: Uuid = Uuid::from_u128(0x0100);
pub const RUN: Uuid = Uuid::from_u128(0x0200);
pub const SCHEDULE: Uuid = Uuid::from_u128(0x0300);

/// The in-memory store: every aggregate ever folded.
#[derive(Default)]
pub struct World {
    pub all: Loaded,
}

impl World {
    /// Folds events, in order, as the store would replay them.
    pub fn given(events: impl IntoIterator<Item = (AggRef, AnyEvent)>) -> Self {
        let mut world = Self::default();
        world.fold(events);
        world
    }

    pub fn fold(&mut self, events: impl IntoIterator<Item = (AggRef, AnyEvent)>) {
        for (agg, event) in events {
            assert_eq!(
                agg.kind,
                event.aggregate_type(),
                "event {} addressed to a {}",
                event.event_type(),
                agg.kind
            );
            let prev = self.all.states.remove(&agg.id);
            let version = prev.as_ref().map_or(0, |v| v.version) + 1;
            let state = AggregateState::evolve(prev.map(|v| v.state), &event).unwrap();
            self.all.states.insert(agg.id, Versioned { version, state });
        }
    }

    /// Decides `cmd` on what `required` names, loading round after round like the glue.
    pub fn when(&self, mut cmd: Command) -> Result<Decision, DomainError> {
        let target = target(&mut cmd);
        let mut loaded = Loaded::default();
        let mut seen = HashSet::new();
        loop {
            let wanted: Vec<AggRef> = required(&cmd, &loaded)
                .into_iter()
                .filter(|r| seen.insert(r.id))
                .collect();
            if wanted.is_empty() {
                break;
            }
            if seen.len() == wanted.len() {
                assert_eq!(wanted[0], target, "required names the target first");
            }
            for r in wanted {
                if let Some(v) = self.all.states.get(&r.id).filter(|v| v.state.kind() == r.kind) {
                    loaded.states.insert(r.id, v.clone());
                }
            }
        }
        let decision = decide(&cmd, &loaded)?;
        if let Some((first, _)) = decision.events.first() {
            assert_eq!(*first, target, "the target's events come first");
        }
        Ok(decision)
    }

    /// Decides `cmd`, which must be accepted, and folds its events.
    pub fn exec(&mut self, cmd: Command) -> Decision {
        let decision = self.when(cmd).unwrap_or_else(|e| panic!("refused: {e}"));
        self.fold(decision.events.clone());
        decision
    }

    /// Runs several commands that must all be accepted.
    pub fn with(mut self, cmds: impl IntoIterator<Item = Command>) -> Self {
        for cmd in cmds {
            self.exec(cmd);
        }
        self
    }

    pub fn state(&self, id: Uuid) -> &Versioned {
        self.all
            .states
            .get(&id)
            .unwrap_or_else(|| panic!("{id} does not exist"))
    }

    pub fn pipeline(&self, id: Uuid) -> &super::Pipeline {
        self.all.pipeline(id).unwrap()
    }

    pub fn run(&self, id: Uuid) -> &super::Run {
        self.all.run(id).unwrap()
    }

    pub fn plugin(&self, reference: &str) -> &super::Plugin {
        self.all.plugin(plugin_id(reference)).unwrap()
    }

    pub fn schedule(&self, id: Uuid) -> &super::Schedule {
        self.all.schedule(id).unwrap()
    }
}

/// A command as a client sends it: subject and JSON body, decoded by the contract.
pub fn cmd(name: &str, body: Value) -> Command {
    let (aggregate, action) = name.split_once('.').unwrap();
    let subject = flexcore_contracts::subjects::command(aggregate, action);
    flexcore_contracts::commands::decode(&subject, body.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{name} {body}: {e}"))
        .1
}

/// The refusal of a body the command's schema does not admit (checked on decoding,
/// before any aggregate is loaded): its reason and JSON pointer.
#[track_caller]
pub fn refused_by_schema(name: &str, body: Value) -> (flexcore_contracts::ErrorReason, String) {
    let (aggregate, action) = name.split_once('.').unwrap();
    let subject = flexcore_contracts::subjects::command(aggregate, action);
    match flexcore_contracts::commands::decode(&subject, body.to_string().as_bytes()) {
        Ok(_) => panic!("{name} {body}: expected a refusal by the schema"),
        Err(e) => {
            assert_eq!(e.code, ErrorCode::ValidationFailed, "{e}");
            (e.details.reason, e.details.path.unwrap_or_default())
        }
    }
}

/// The refusal, which must have `code`.
#[track_caller]
pub fn then_error(result: Result<Decision, DomainError>, code: ErrorCode) -> DomainError {
    match result {
        Ok(d) => panic!("expected {code}, got events {:?}", types(&d)),
        Err(e) => {
            assert_eq!(e.code(), code, "{e}");
            assert!(!e.to_string().is_empty());
            e
        }
    }
}

/// The accepted decision's events as (aggregate id, type).
pub fn types(d: &Decision) -> Vec<(Uuid, &'static str)> {
    d.events.iter().map(|(a, e)| (a.id, e.event_type())).collect()
}

/// The decision, which must be exactly one event of `event_type` on `id`; returns its data.
#[track_caller]
pub fn then_one(result: Result<Decision, DomainError>, id: Uuid, event_type: &str) -> (Decision, Value) {
    let d = result.unwrap_or_else(|e| panic!("expected {event_type}, got {e}"));
    assert_eq!(types(&d), vec![(id, event_type)]);
    let data = d.events[0].1.data().to_value();
    (d, data)
}

/// The refusal's `details` as JSON (`reason`, `path`, facts).
pub fn details(e: &DomainError) -> Value {
    serde_json::to_value(e.to_error_body().details).unwrap_or(Value::Null)
}

pub fn plugin_id(reference: &str) -> Uuid {
    let (name, version) = reference.split_once('@').unwrap();
    flexcore_contracts::ids::plugin_id(name, version)
}

pub fn digest() -> String {
    format!("sha256:{}", "ab".repeat(32))
}

pub fn register(reference: &str, kind: &str, schema: Option<Value>) -> Command {
    let (name, version) = reference.split_once('@').unwrap();
    let mut body = json!({"name": name, "version": version, "kind": kind, "module_digest": digest()});
    if let Some(schema) = schema {
        body["config_schema"] = schema;
    }
    cmd("plugin.register", body)
}

/// The loader's schema requires `path` and marks `password` as a secret.
pub fn jsonl_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"path": {"type": "string"}, "password": {"type": "string", "writeOnly": true}},
        "required": ["path"]
    })
}

/// An extractor (csv, no schema), a transformer (map) and a loader (jsonl, with schema).
pub fn with_plugins() -> World {
    World::default().with([
        register(CSV, "extractor", None),
        register(MAP, "transformer", Some(json!({"type": "object"}))),
        register(JSONL, "loader", Some(jsonl_schema())),
    ])
}

pub fn good_steps() -> Value {
    json!([{"plugin": CSV, "config": {"path": "/in.csv"}}, {"plugin": JSONL, "config": {"path": "/out", "password": "${secret:DB_PASSWORD}"}}])
}

pub fn create_pipeline(id: Uuid, name: &str, steps: Value) -> Command {
    cmd(
        "pipeline.create",
        json!({"pipeline_id": id, "name": name, "owner": "data-team", "tags": ["sales"], "steps": steps}),
    )
}

/// Plugins and the pipeline `PIPELINE` ("orders", 3 attempts).
pub fn with_pipeline() -> World {
    with_plugins().with([create_pipeline(PIPELINE, "orders", good_steps())])
}

pub fn request_run(run: Uuid) -> Command {
    cmd(
        "run.request",
        json!({"run_id": run, "pipeline_id": PIPELINE, "trigger": "manual"}),
    )
}

/// A pipeline and the run `RUN`, requested (attempt 1).
pub fn with_run() -> World {
    with_pipeline().with([request_run(RUN)])
}

pub fn claim(attempt: u32) -> Command {
    cmd(
        "run.claim",
        json!({"run_id": RUN, "attempt": attempt, "runner_id": "runner-a"}),
    )
}

/// `RUN` claimed by runner-a (attempt 1).
pub fn with_running() -> World {
    with_run().with([claim(1)])
}

pub fn fail(attempt: u32, retryable: bool) -> Command {
    cmd(
        "run.fail",
        json!({"run_id": RUN, "attempt": attempt, "retryable": retryable, "error": {"code": "plugin_trap", "message": "boom"}}),
    )
}

pub fn create_schedule(body: Value) -> Command {
    let mut full = json!({"schedule_id": SCHEDULE, "pipeline_id": PIPELINE, "cron": "0 * * * *"});
    if let (Some(full), Some(extra)) = (full.as_object_mut(), body.as_object()) {
        full.extend(extra.clone());
    }
    cmd("schedule.create", full)
}

/// A pipeline and the active schedule `SCHEDULE` (hourly, UTC).
pub fn with_schedule() -> World {
    with_pipeline().with([create_schedule(json!({}))])
}
