//! The command path's decision logic, without I/O: what a decision is made on (a
//! [`Snapshot`] whose every state knows where it came from) and what to do with the
//! decision ([`next`]: commit it, read some states again, or refuse).
//!
//! The executor (`executor.rs`) fills the snapshot from the cache and the log, asks the
//! domain to decide on it, and acts on [`Next`]; everything that could be decided wrongly
//! lives here and is unit-tested below on hand-made snapshots.
//!
//! A state taken from the cache or assumed absent is not known to be current: another
//! replica may have written that aggregate. A decision on such a state is still safe to
//! commit, because the append proves it. An aggregate the decision writes is proven by
//! its new version (the store refuses a version that exists); any other cached state by a
//! [`VersionCheck`] the append makes before writing. A refusal cannot be proven that way
//! (nothing is appended), so it is given only on states read from the log.

use std::collections::HashMap;

use flexcore_contracts::commands::Command;
use flexcore_contracts::ErrorReason;
use flexcore_eventstore::VersionCheck;
use uuid::Uuid;

use crate::domain::{self, AggRef, AggregateState, AnyEvent, Constraints, Decision, DomainError, Loaded, Versioned};

/// Where a state in a [`Snapshot`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Read from the log for this command: current when read.
    Fresh,
    /// This replica's cache: current unless another replica wrote the aggregate since.
    Cached,
    /// Not cached, and taken not to exist without reading the log: only a decision that
    /// creates the aggregate may rely on it (its version 1 proves it).
    AssumedAbsent,
}

/// One aggregate the decision looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// The reference it was looked at under.
    reference: AggRef,
    source: Source,
    /// The version found (0: no events), whatever the aggregate's type: a cached state of
    /// another type than the reference expected is still checked at this version.
    version: u64,
}

/// The states a decision is made on, each with its [`Source`].
#[derive(Debug, Clone)]
pub struct Snapshot {
    target: AggRef,
    /// The states found whose type is the one referred to: what the domain decides on.
    loaded: Loaded,
    seen: HashMap<Uuid, Seen>,
}

impl Snapshot {
    /// An empty snapshot for a command addressing `target`.
    pub fn new(target: AggRef) -> Self {
        Self {
            target,
            loaded: Loaded::default(),
            seen: HashMap::new(),
        }
    }

    /// The aggregate the command addresses.
    pub fn target(&self) -> AggRef {
        self.target
    }

    /// Records what was found for `reference`: `found` is `None` for an aggregate without
    /// events (or assumed to have none). Replaces an earlier record of the same id.
    pub fn insert(&mut self, reference: AggRef, source: Source, found: Option<Versioned>) {
        let version = found.as_ref().map_or(0, |v| v.version);
        self.seen.insert(
            reference.id,
            Seen {
                reference,
                source,
                version,
            },
        );
        match found.filter(|v| v.state.kind() == reference.kind) {
            Some(v) => {
                self.loaded.states.insert(reference.id, v);
            }
            None => {
                self.loaded.states.remove(&reference.id);
            }
        }
    }

    /// The states to decide on.
    pub fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    /// Where the state of `id` came from, if it was looked at.
    pub fn source(&self, id: Uuid) -> Option<Source> {
        self.seen.get(&id).map(|s| s.source)
    }

    /// The version the decision sees for `id` (0: absent, or not of the type referred to).
    pub fn version(&self, id: Uuid) -> u64 {
        self.loaded.states.get(&id).map_or(0, |v| v.version)
    }

    /// The aggregates `command` needs that this snapshot has not looked at yet, target
    /// first. `hint` offers states that may be stale (the cache) for discovering
    /// references early: a cached pipeline names its plugins, so they can be read in the
    /// same round as the pipeline instead of the next one. The states read then decide;
    /// a reference only they name is asked for by the next call.
    pub fn missing(&self, command: &Command, hint: impl Fn(Uuid) -> Option<Versioned>) -> Vec<AggRef> {
        let mut wanted = domain::required(command, &self.loaded);
        let hinted: Vec<(Uuid, Versioned)> = wanted
            .iter()
            .filter(|r| !self.seen.contains_key(&r.id))
            .filter_map(|r| Some((r.id, hint(r.id).filter(|v| v.state.kind() == r.kind)?)))
            .collect();
        if !hinted.is_empty() {
            let mut with_hints = self.loaded.clone();
            with_hints.states.extend(hinted);
            wanted.extend(domain::required(command, &with_hints));
        }
        let mut unique = std::collections::HashSet::new();
        wanted.retain(|r| !self.seen.contains_key(&r.id) && unique.insert(r.id));
        wanted
    }

    /// The aggregates not read from the log (cached or assumed absent).
    pub fn unconfirmed(&self) -> Vec<AggRef> {
        let mut refs: Vec<AggRef> = self
            .seen
            .values()
            .filter(|s| s.source != Source::Fresh)
            .map(|s| s.reference)
            .collect();
        refs.sort_unstable_by_key(|r| r.id);
        refs
    }
}

/// What to do with a decision.
#[derive(Debug)]
pub enum Next {
    /// Append it.
    Commit(Plan),
    /// Read these aggregates from the log and decide again: the decision rests on states
    /// that may be stale and that its append could not prove.
    Reload(Vec<AggRef>),
    /// Refuse the command: every state the refusal rests on was read from the log.
    Refuse(DomainError),
}

/// A decision made ready to append.
#[derive(Debug)]
pub struct Plan {
    /// The events in order, each with its aggregate and version.
    pub events: Vec<Planned>,
    /// What the store must enforce with the append.
    pub constraints: Constraints,
    /// The cached states the decision read without writing them, each to be at its
    /// version when the append runs.
    pub checks: Vec<VersionCheck>,
    /// The written aggregates' states after the append, for the cache.
    pub states: HashMap<Uuid, Versioned>,
    /// The addressed aggregate's version after the append (unchanged when not written).
    pub target_version: u64,
}

/// One event of a [`Plan`].
#[derive(Debug)]
pub struct Planned {
    /// Its aggregate.
    pub aggregate: AggRef,
    /// Its version: the aggregate's version in the snapshot plus its place among the
    /// decision's events on that aggregate.
    pub version: u64,
    /// The event.
    pub event: AnyEvent,
}

/// Decides what becomes of `verdict`, the domain's decision on `snapshot` for a command
/// the client expects at `expected_version` (if it gave one). Errs only when the
/// decision's events cannot be folded onto the states they were decided on (a defect).
pub fn next(
    snapshot: &Snapshot,
    expected_version: Option<u64>,
    verdict: Result<Decision, DomainError>,
) -> Result<Next, DomainError> {
    let target = snapshot.target;
    let current = snapshot.version(target.id);
    let verdict = match expected_version {
        Some(expected) if expected != current => Err(DomainError::conflict(
            ErrorReason::Version,
            format!(
                "expected version {expected} but {} {} is at version {current}",
                target.kind.as_str(),
                target.id
            ),
        )
        .with("expected_version", expected)
        .with("current_version", current)),
        _ => verdict,
    };
    let decision = match verdict {
        Ok(decision) => decision,
        Err(refusal) => {
            let unconfirmed = snapshot.unconfirmed();
            return Ok(match unconfirmed.is_empty() {
                true => Next::Refuse(refusal),
                false => Next::Reload(unconfirmed),
            });
        }
    };
    let creates_target = decision.events.iter().any(|(agg, _)| agg.id == target.id);
    if snapshot.source(target.id) == Some(Source::AssumedAbsent) && !creates_target {
        return Ok(Next::Reload(vec![target]));
    }
    let mut states: HashMap<Uuid, Versioned> = HashMap::new();
    let mut events = Vec::with_capacity(decision.events.len());
    for (aggregate, event) in decision.events {
        let before = match states.remove(&aggregate.id) {
            Some(v) => Some(v),
            None => snapshot.loaded.states.get(&aggregate.id).cloned(),
        };
        let version = before.as_ref().map_or(0, |v| v.version) + 1;
        let state = AggregateState::evolve(before.map(|v| v.state), &event)?;
        states.insert(aggregate.id, Versioned { version, state });
        events.push(Planned {
            aggregate,
            version,
            event,
        });
    }
    let mut checks: Vec<VersionCheck> = snapshot
        .seen
        .iter()
        .filter(|(id, seen)| seen.source == Source::Cached && !states.contains_key(id))
        .map(|(id, seen)| VersionCheck {
            aggregate_id: *id,
            version: seen.version,
        })
        .collect();
    checks.sort_unstable_by_key(|c| c.aggregate_id);
    let target_version = states.get(&target.id).map_or(current, |v| v.version);
    Ok(Next::Commit(Plan {
        events,
        constraints: decision.constraints,
        checks,
        states,
        target_version,
    }))
}

#[cfg(test)]
mod tests {
    use flexcore_contracts::ErrorCode;
    use serde_json::{json, Value};

    use super::*;

    fn cmd(name: &str, body: Value) -> Command {
        let (aggregate, action) = name.split_once('.').unwrap();
        let subject = flexcore_contracts::subjects::command(aggregate, action);
        flexcore_contracts::commands::decode(&subject, body.to_string().as_bytes())
            .unwrap()
            .1
    }

    /// Registers `name@1.0.0`: `jsonl` as a loader, any other as an extractor.
    fn register(name: &str) -> Command {
        let kind = if name == "jsonl" { "loader" } else { "extractor" };
        cmd(
            "plugin.register",
            json!({"name": name, "version": "1.0.0", "kind": kind, "module_digest": format!("sha256:{}", "ab".repeat(32))}),
        )
    }

    /// A pipeline from csv to jsonl.
    fn create_pipeline(id: Uuid) -> Command {
        cmd(
            "pipeline.create",
            json!({"pipeline_id": id, "name": "p", "owner": "team", "steps": [
                {"plugin": "csv@1.0.0", "config": {}},
                {"plugin": "jsonl@1.0.0", "config": {}}
            ]}),
        )
    }

    /// A registered plugin's id and state (version 1).
    fn plugin(name: &str) -> (AggRef, Versioned) {
        let mut command = register(name);
        let target = domain::target(&mut command);
        let decision = domain::decide(&command, &Loaded::default()).unwrap();
        let state = AggregateState::evolve(None, &decision.events[0].1).unwrap();
        (target, Versioned { version: 1, state })
    }

    /// The plugin's state after `deprecate`, at version 2.
    fn deprecated(plugin: (AggRef, Versioned)) -> (AggRef, Versioned) {
        let (target, before) = plugin;
        let mut loaded = Loaded::default();
        loaded.states.insert(target.id, before.clone());
        let decision = domain::decide(&deprecate(target.id), &loaded).unwrap();
        let state = AggregateState::evolve(Some(before.state), &decision.events[0].1).unwrap();
        (target, Versioned { version: 2, state })
    }

    fn deprecate(id: Uuid) -> Command {
        cmd("plugin.deprecate", json!({"plugin_id": id, "reason": "replaced"}))
    }

    fn decide_next(snapshot: &Snapshot, command: &Command, expected: Option<u64>) -> Next {
        next(snapshot, expected, domain::decide(command, snapshot.loaded())).unwrap()
    }

    #[test]
    fn a_decision_on_a_cached_state_it_writes_is_committed_without_a_check() {
        let (target, state) = plugin("csv");
        let mut snapshot = Snapshot::new(target);
        snapshot.insert(target, Source::Cached, Some(state));
        let Next::Commit(plan) = decide_next(&snapshot, &deprecate(target.id), None) else {
            panic!("expected a commit");
        };
        assert_eq!(plan.events.len(), 1);
        assert_eq!(plan.events[0].version, 2, "the cached version 1, plus one");
        assert!(plan.checks.is_empty(), "its new version proves the cached state");
        assert_eq!(plan.target_version, 2);
        assert_eq!(plan.states[&target.id].version, 2);
    }

    #[test]
    fn cached_states_read_but_not_written_are_checked_at_their_version() {
        let (csv, csv_state) = plugin("csv");
        let (jsonl, jsonl_state) = plugin("jsonl");
        let pipeline = AggRef::pipeline(Uuid::from_u128(7));
        let create = create_pipeline(pipeline.id);
        let mut snapshot = Snapshot::new(pipeline);
        snapshot.insert(pipeline, Source::AssumedAbsent, None);
        snapshot.insert(csv, Source::Cached, Some(csv_state));
        snapshot.insert(jsonl, Source::Fresh, Some(jsonl_state));
        let Next::Commit(plan) = decide_next(&snapshot, &create, None) else {
            panic!("expected a commit");
        };
        assert_eq!(plan.events[0].aggregate, pipeline);
        assert_eq!(plan.events[0].version, 1, "creating proves the pipeline was absent");
        assert_eq!(
            plan.checks,
            vec![VersionCheck {
                aggregate_id: csv.id,
                version: 1
            }],
            "the cached plugin, not the one read"
        );
        // Read fresh, the plugin needs no check.
        snapshot.insert(csv, Source::Fresh, Some(plugin("csv").1));
        let Next::Commit(plan) = decide_next(&snapshot, &create, None) else {
            panic!("expected a commit");
        };
        assert!(plan.checks.is_empty());
    }

    #[test]
    fn a_refusal_on_cached_or_assumed_states_reloads_them_and_one_on_fresh_states_is_given() {
        let (target, state) = plugin("csv");
        let (other, other_state) = plugin("map");
        // Deprecating a deprecated plugin is refused.
        let (_, gone) = deprecated((target, state));
        let mut snapshot = Snapshot::new(target);
        snapshot.insert(target, Source::Cached, Some(gone.clone()));
        snapshot.insert(other, Source::Fresh, Some(other_state));
        match decide_next(&snapshot, &deprecate(target.id), None) {
            Next::Reload(refs) => assert_eq!(refs, vec![target], "only what was not read"),
            other => panic!("expected a reload, got {other:?}"),
        }
        snapshot.insert(target, Source::Fresh, Some(gone));
        match decide_next(&snapshot, &deprecate(target.id), None) {
            Next::Refuse(e) => assert_eq!(e.code(), ErrorCode::InvalidState, "{e}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_target_assumed_absent_holds_only_for_a_decision_creating_it() {
        let (target, _) = plugin("csv");
        let mut snapshot = Snapshot::new(target);
        snapshot.insert(target, Source::AssumedAbsent, None);
        // Deprecating an absent plugin is refused: confirmed on the log first.
        match decide_next(&snapshot, &deprecate(target.id), None) {
            Next::Reload(refs) => assert_eq!(refs, vec![target]),
            other => panic!("expected a reload, got {other:?}"),
        }
        // Registering it is committed at version 1, which the append proves.
        let Next::Commit(plan) = decide_next(&snapshot, &register("csv"), None) else {
            panic!("expected a commit");
        };
        assert_eq!(plan.events[0].version, 1);
        assert!(plan.checks.is_empty());
    }

    #[test]
    fn an_accepted_decision_not_writing_a_target_assumed_absent_is_reloaded() {
        // A retried registration of an existing plugin writes nothing; were it decided on
        // an assumed-absent plugin, it would be taken for a first registration.
        let (target, _) = plugin("csv");
        let mut snapshot = Snapshot::new(target);
        snapshot.insert(target, Source::AssumedAbsent, None);
        let verdict = Ok(Decision::default());
        match next(&snapshot, None, verdict).unwrap() {
            Next::Reload(refs) => assert_eq!(refs, vec![target]),
            other => panic!("expected a reload, got {other:?}"),
        }
    }

    #[test]
    fn an_expected_version_is_compared_with_the_snapshot_and_confirmed_before_refusing() {
        let (target, state) = plugin("csv");
        let mut snapshot = Snapshot::new(target);
        snapshot.insert(target, Source::Cached, Some(state.clone()));
        let command = deprecate(target.id);
        assert!(matches!(decide_next(&snapshot, &command, Some(1)), Next::Commit(_)));
        assert!(matches!(decide_next(&snapshot, &command, Some(3)), Next::Reload(_)));
        snapshot.insert(target, Source::Fresh, Some(state));
        match decide_next(&snapshot, &command, Some(3)) {
            Next::Refuse(e) => {
                let body = e.to_error_body();
                assert_eq!(body.details.reason, ErrorReason::Version);
                assert!(e.to_string().contains("expected version 3 but plugin"), "{e}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_state_of_another_type_is_not_decided_on_but_still_checked() {
        let (plugin_ref, plugin_state) = plugin("csv");
        // A command naming the plugin's id as a pipeline's.
        let as_pipeline = AggRef::pipeline(plugin_ref.id);
        let mut snapshot = Snapshot::new(as_pipeline);
        snapshot.insert(as_pipeline, Source::Cached, Some(plugin_state));
        assert!(snapshot.loaded().pipeline(plugin_ref.id).is_none());
        assert!(snapshot.loaded().plugin(plugin_ref.id).is_none());
        assert_eq!(snapshot.version(plugin_ref.id), 0);
        assert_eq!(snapshot.unconfirmed(), vec![as_pipeline]);
        let verdict = Ok(Decision::default());
        let Next::Commit(plan) = next(&snapshot, None, verdict).unwrap() else {
            panic!("expected a commit");
        };
        assert_eq!(
            plan.checks,
            vec![VersionCheck {
                aggregate_id: plugin_ref.id,
                version: 1
            }]
        );
    }

    #[test]
    fn several_events_on_one_aggregate_take_successive_versions() {
        use flexcore_contracts::events::{PluginDisabled, PluginEnabled};
        let (target, state) = plugin("csv");
        let mut snapshot = Snapshot::new(target);
        snapshot.insert(target, Source::Fresh, Some(state));
        let verdict = Ok(Decision::one(target, PluginDisabled { reason: None })
            .and(target, PluginEnabled {})
            .and(target, PluginDisabled { reason: None }));
        let Next::Commit(plan) = next(&snapshot, None, verdict).unwrap() else {
            panic!("expected a commit");
        };
        let versions: Vec<u64> = plan.events.iter().map(|p| p.version).collect();
        assert_eq!(versions, vec![2, 3, 4]);
        assert_eq!(plan.target_version, 4);
        assert_eq!(plan.states[&target.id].version, 4);
    }

    #[test]
    fn events_that_cannot_be_folded_are_a_defect_not_a_refusal() {
        let (target, state) = plugin("csv");
        let mut snapshot = Snapshot::new(target);
        snapshot.insert(target, Source::Fresh, Some(state));
        // A second registration event on an existing plugin cannot be applied.
        let mut command = register("csv");
        domain::target(&mut command);
        let creation = domain::decide(&command, &Loaded::default()).unwrap();
        assert!(next(&snapshot, None, Ok(creation)).is_err());
    }

    #[test]
    fn missing_names_what_is_not_looked_at_and_reads_references_through_hints() {
        let (csv, csv_state) = plugin("csv");
        let (jsonl, jsonl_state) = plugin("jsonl");
        let run = AggRef::run(Uuid::from_u128(9));
        let pipeline = AggRef::pipeline(Uuid::from_u128(7));
        let create = create_pipeline(pipeline.id);
        let mut pipeline_loaded = Loaded::default();
        pipeline_loaded.states.insert(csv.id, csv_state.clone());
        pipeline_loaded.states.insert(jsonl.id, jsonl_state.clone());
        let created = domain::decide(&create, &pipeline_loaded).unwrap();
        let pipeline_state = Versioned {
            version: 1,
            state: AggregateState::evolve(None, &created.events[0].1).unwrap(),
        };
        let request = cmd("run.request", json!({"run_id": run.id, "pipeline_id": pipeline.id}));
        let mut snapshot = Snapshot::new(run);
        let no_hints = |_: Uuid| None;
        assert_eq!(snapshot.missing(&request, no_hints), vec![run, pipeline]);
        // With the pipeline cached, its plugin is asked for in the same round.
        let cache = |id: Uuid| (id == pipeline.id).then(|| pipeline_state.clone());
        assert_eq!(snapshot.missing(&request, cache), vec![run, pipeline, csv, jsonl]);
        snapshot.insert(run, Source::AssumedAbsent, None);
        snapshot.insert(pipeline, Source::Fresh, Some(pipeline_state));
        snapshot.insert(csv, Source::Fresh, Some(csv_state));
        assert_eq!(
            snapshot.missing(&request, no_hints),
            vec![jsonl],
            "named by the pipeline read"
        );
        snapshot.insert(jsonl, Source::Fresh, Some(jsonl_state));
        assert!(snapshot.missing(&request, no_hints).is_empty());
    }
}
