//! Executes one decoded command: load what the decision needs, decide, append through
//! the group committer, and turn the outcome into the reply. Version conflicts are
//! retried (reload, decide again) a bounded number of times when the client gave no
//! `expected_version`; a known `command_id` returns its first reply. A dry run
//! (`dry_run: true`) takes the same path up to the append, decided on state read from
//! the log, and stops there: it writes nothing (see [`Executor::dry_run`]).

use std::sync::atomic::{AtomicU64, Ordering};

use flexcore_contracts::commands::{Command, CommandMeta};
use flexcore_contracts::reply::{Accepted, EventRef};
use flexcore_contracts::{CommandReply, ErrorBody, ErrorReason, EventMetadata};
use flexcore_eventstore::{
    Announced, AppendOutcome, AppendRequest, EventStore, NewEvent, SlotClaim, StoreError, UniqueKey, VersionCheck,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::cache::{AggregateCache, LoadError};
use super::snapshot::{self, Next, Plan, Planned, Snapshot, Source};
use crate::domain::{self, AggRef};

/// Who sent the command, from its headers.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// `Flexcore-Correlation-Id`.
    pub correlation_id: Option<String>,
    /// The verified sender's identity name (`unsigned` for an accepted unsigned command).
    pub actor: Option<String>,
    /// `Flexcore-Requested-By`: who the sender says asked (unverified), recorded apart
    /// from `actor` and never in its place.
    pub requested_by: Option<String>,
    /// W3C `traceparent` stored on the events: the command handling span's when spans
    /// are exported, else the request's `traceparent` header (only a valid one).
    pub traceparent: Option<String>,
    /// The largest message the NATS server accepts (its `max_payload`): no event whose
    /// message would be larger is committed, since the relay could never publish it.
    pub bus_limit: usize,
}

/// Room a STATE leaves in an event for everything else: `run.claimed` carries the
/// pipeline's bookmark with the attempt, runner id (≤ 800 bytes), lease, the metadata
/// (correlation id and actor ≤ 800 bytes each, command id, traceparent) and the envelope
/// and headers around it. A STATE that fits in `bus_limit − STATE_RESERVE` bytes can be
/// committed, claimed and published.
pub const STATE_RESERVE: usize = 8 * 1024;

/// Stripes of the per-aggregate lock: commands on one aggregate are serialised inside a
/// replica (so they never race each other), unrelated ones rarely share a stripe.
const LOCK_STRIPES: usize = 4096;

/// Decides and appends commands.
pub struct Executor {
    store: EventStore,
    cache: AggregateCache,
    conflict_retries: u32,
    locks: Vec<tokio::sync::Mutex<()>>,
    staleness: Staleness,
}

/// How often this replica's cached states were stale lately: the last 64 checks of a
/// cached addressed aggregate against the log, one bit each (1 = another replica had
/// moved it on).
///
/// With one replica a cached state is nearly always current, and a command is decided on
/// it without reading anything (the append proves it). With several replicas behind one
/// queue group, successive commands on an aggregate land on different replicas, so most
/// cached states are stale, and deciding on one costs a failed append, a read and a
/// second append. Above [`STALE_LIMIT`] of the last 64 checks, the executor reads the new
/// events of every aggregate the command needs first (one indexed query, from the cached
/// versions, usually finding nothing) and decides on current state; the addressed
/// aggregate's reads keep the record, so a replica returns to deciding on its cache when
/// the others stop writing its aggregates.
#[derive(Default)]
struct Staleness(AtomicU64);

/// Stale checks among the last 64 above which cached states are read up to date before
/// deciding (docs/benchmarks.md, "Replicas", measured both ways).
const STALE_LIMIT: u32 = 8;

impl Staleness {
    fn record(&self, stale: bool) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            Some(bits << 1 | u64::from(stale))
        });
        flexcore_service::metrics::commands().cache_checked(stale);
    }

    fn read_first(&self) -> bool {
        self.0.load(Ordering::Relaxed).count_ones() > STALE_LIMIT
    }
}

/// A decoded command made ready to execute: its ids filled in and the aggregate it
/// addresses known (for the handling span, before anything runs).
#[derive(Debug)]
pub struct Prepared {
    meta: CommandMeta,
    command: Command,
    target: AggRef,
    payload_hash: String,
}

impl Prepared {
    /// Hashes the command as sent (so a retried create without an id matches itself),
    /// then fills in the ids it left out and finds the aggregate it addresses.
    pub fn new(meta: CommandMeta, mut command: Command) -> Self {
        let payload_hash = hex::encode(Sha256::digest(command.body().as_bytes()));
        let target = domain::target(&mut command);
        Self {
            meta,
            command,
            target,
            payload_hash,
        }
    }

    /// The command.
    pub fn command(&self) -> &Command {
        &self.command
    }

    /// The client's `command_id`, if it gave one.
    pub fn command_id(&self) -> Option<Uuid> {
        self.meta.command_id
    }

    /// The id of the aggregate the command addresses (filled in when the command left it out).
    pub fn aggregate_id(&self) -> Uuid {
        self.target.id
    }
}

/// One command being executed: what every step of it needs.
struct Job<'a> {
    meta: &'a CommandMeta,
    command: &'a Command,
    ctx: &'a RequestContext,
    target: AggRef,
    payload_hash: String,
}

enum Attempt {
    Done(CommandReply),
    Retry,
}

impl Executor {
    /// An executor over `store` with an aggregate cache of `cache_size` entries.
    pub fn new(store: EventStore, cache_size: usize, conflict_retries: u32) -> Self {
        let cache = AggregateCache::new(store.clone(), cache_size);
        let locks = (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        Self {
            store,
            cache,
            conflict_retries,
            locks,
            staleness: Staleness::default(),
        }
    }

    /// Handles one command; every outcome is a reply (store failures become
    /// `unavailable`/`internal`).
    pub async fn execute(&self, prepared: Prepared, ctx: RequestContext) -> Result<CommandReply, ErrorBody> {
        let Prepared {
            meta,
            command,
            target,
            payload_hash,
        } = prepared;
        // Who sent it is part of what a command id stands for: another sender's command
        // under the same id is `command_id_reused`, never answered with the first reply
        // (command ids are one namespace; a sender must not take up, or read, another's).
        let payload_hash = match &ctx.actor {
            Some(actor) => hex::encode(Sha256::digest(format!("{payload_hash}\n{actor}").as_bytes())),
            None => payload_hash,
        };
        let job = Job {
            meta: &meta,
            command: &command,
            ctx: &ctx,
            target,
            payload_hash,
        };
        let stripe = usize::try_from(target.id.as_u128() % LOCK_STRIPES as u128).unwrap_or(0);
        let _serialised = self.locks[stripe].lock().await;
        // A dry run has no append to prove a cached state current: it reads the log.
        let mut fresh = self.staleness.read_first() || meta.dry_run;
        // This command will most likely append soon: a writer with a batch open may wait
        // for it (a little) rather than commit without it.
        let mut announced = (!meta.dry_run).then(|| self.store.announce_append());
        for retry in 0..=self.conflict_retries {
            if retry > 0 {
                // Another replica wrote the same aggregate: back off a little, with jitter,
                // so competing replicas do not collide again in lock step.
                let jitter = rand::random_range(0..2u64 << retry.min(5));
                tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
            }
            match self.attempt(&job, fresh, &mut announced).await? {
                Attempt::Done(reply) => return Ok(reply),
                Attempt::Retry => fresh = true,
            }
        }
        Err(ErrorBody::new(
            ErrorReason::Contention,
            format!(
                "{} lost {} optimistic-concurrency races in a row; retry later",
                command.name(),
                self.conflict_retries + 1
            ),
        ))
    }

    async fn attempt(
        &self,
        job: &Job<'_>,
        fresh: bool,
        announced: &mut Option<Announced>,
    ) -> Result<Attempt, ErrorBody> {
        let Job {
            meta, command, target, ..
        } = *job;
        let mut snapshot = Snapshot::new(target);
        self.fill(command, &mut snapshot, fresh).await?;
        let plan = loop {
            let verdict = domain::decide(command, snapshot.loaded());
            match snapshot::next(&snapshot, meta.expected_version, verdict).map_err(|e| e.to_error_body())? {
                Next::Commit(plan) => break plan,
                // Read what may be stale, and what the states read name, then decide again
                // (on states all read from the log: the next answer is not a reload).
                Next::Reload(refs) => {
                    self.read(&mut snapshot, &refs).await?;
                    self.fill(command, &mut snapshot, true).await?;
                }
                Next::Refuse(error) if meta.dry_run => {
                    return Ok(Attempt::Done(CommandReply::rejected(error.to_error_body())))
                }
                Next::Refuse(error) => return Ok(Attempt::Done(self.refuse(job, error.to_error_body()).await?)),
            }
        };
        if meta.dry_run {
            return Ok(Attempt::Done(self.dry_run(job, plan).await?));
        }
        let Plan {
            events,
            constraints,
            checks,
            states,
            target_version,
        } = plan;
        let (request, refs) = self.request(job, events, constraints, checks, target_version)?;
        let outcome = self
            .store
            .append_announced(request, announced.take())
            .await
            .map_err(store_error)?;
        if snapshot.source(target.id) == Some(Source::Cached) {
            // The addressed aggregate was decided on its cached state: the append tells
            // whether that state was current.
            let stale = matches!(
                outcome,
                AppendOutcome::StaleRead { .. } | AppendOutcome::VersionConflict
            );
            self.staleness.record(stale);
        }
        Ok(Attempt::Done(match outcome {
            AppendOutcome::Committed { positions } => {
                for (id, versioned) in states {
                    self.cache.store_committed(id, versioned);
                }
                let global_position = positions.last().copied().unwrap_or_default();
                accepted(target, target_version, refs, global_position)
            }
            AppendOutcome::Duplicate(stored) => {
                duplicate(job, &stored.command_type, &stored.payload_hash, stored.reply)?
            }
            AppendOutcome::StaleRead { aggregate_id } => {
                // A cached state the decision read has moved on (another replica wrote it).
                self.cache.invalidate(aggregate_id);
                return Ok(Attempt::Retry);
            }
            AppendOutcome::VersionConflict => {
                for id in states.keys() {
                    self.cache.invalidate(*id);
                }
                if meta.expected_version.is_some() {
                    let error = ErrorBody::new(
                        ErrorReason::Version,
                        format!(
                            "{} {} was changed concurrently; reload it and decide again",
                            target.kind.as_str(),
                            target.id
                        ),
                    );
                    return Ok(Attempt::Done(self.refuse(job, error).await?));
                }
                return Ok(Attempt::Retry);
            }
            AppendOutcome::ConstraintViolated { constraint } => {
                tracing::error!(%constraint, command = command.name(), "the append violated a constraint");
                return Err(internal(format!(
                    "the command's writes violated the store's constraint {constraint}"
                )));
            }
            AppendOutcome::UniqueTaken { scope, key, owner } => {
                self.refuse(job, unique_taken(scope, key, owner)).await?
            }
            AppendOutcome::SlotsFull { active, max } => {
                let error = ErrorBody::new(
                    ErrorReason::MaxActiveRuns,
                    format!("the pipeline already has {active} active run(s) and allows {max} (max_active_runs); wait for one to finish or raise the limit"),
                )
                .with("active", active)
                .with("max", max);
                self.refuse(job, error).await?
            }
        }))
    }

    /// Adds to `snapshot` every aggregate `command` needs, round after round as references
    /// are discovered (a run needs its pipeline, then the pipeline's plugins). Unless
    /// `fresh`, cached states are taken as they are and an addressed aggregate that is not
    /// cached is assumed absent (the append proves both, see [`snapshot`]); the rest is
    /// read, all of a round in one query. Ends because every round looks at something
    /// new and states name finitely many others.
    async fn fill(&self, command: &Command, snapshot: &mut Snapshot, fresh: bool) -> Result<(), ErrorBody> {
        loop {
            let wanted = match fresh {
                // Cached states name references early, so one round usually reads all.
                true => snapshot.missing(command, |id| self.cache.cached(id)),
                false => snapshot.missing(command, |_| None),
            };
            if wanted.is_empty() {
                return Ok(());
            }
            let mut to_read = Vec::with_capacity(wanted.len());
            for reference in wanted {
                if fresh {
                    to_read.push(reference);
                    continue;
                }
                match self.cache.cached(reference.id) {
                    Some(cached) => snapshot.insert(reference, Source::Cached, Some(cached)),
                    None if reference.id == snapshot.target().id => {
                        snapshot.insert(reference, Source::AssumedAbsent, None)
                    }
                    None => to_read.push(reference),
                }
            }
            self.read(snapshot, &to_read).await?;
        }
    }

    /// Reads `refs` from the log (the cached states brought up to date) into `snapshot`.
    async fn read(&self, snapshot: &mut Snapshot, refs: &[AggRef]) -> Result<(), ErrorBody> {
        if refs.is_empty() {
            return Ok(());
        }
        let target = snapshot.target().id;
        let ids: Vec<Uuid> = refs.iter().map(|r| r.id).collect();
        let cached_target = ids
            .contains(&target)
            .then(|| self.cache.cached_version(target))
            .flatten();
        let mut read = self.cache.load_fresh_many(&ids).await.map_err(load_error)?;
        if let Some(cached) = cached_target {
            self.staleness
                .record(read.get(&target).map_or(0, |v| v.version) != cached);
        }
        for reference in refs {
            snapshot.insert(*reference, Source::Fresh, read.remove(&reference.id));
        }
        Ok(())
    }

    /// The append of a plan's events (new ids, the command's metadata), and the reply's
    /// references to them. The reply is stored with the command only when the client
    /// gave a `command_id` (to answer a retry); the store fills in its `global_position`.
    fn request(
        &self,
        job: &Job<'_>,
        planned: Vec<Planned>,
        constraints: domain::Constraints,
        checks: Vec<VersionCheck>,
        target_version: u64,
    ) -> Result<(AppendRequest, Vec<EventRef>), ErrorBody> {
        let Job {
            meta,
            command,
            ctx,
            target,
            ..
        } = *job;
        let metadata = EventMetadata {
            correlation_id: ctx
                .correlation_id
                .clone()
                .or_else(|| meta.command_id.map(|c| c.to_string())),
            causation_id: meta.command_id,
            actor: ctx.actor.clone(),
            requested_by: ctx.requested_by.clone(),
            traceparent: ctx.traceparent.clone(),
        };
        let mut events = Vec::with_capacity(planned.len());
        let mut refs = Vec::with_capacity(planned.len());
        for Planned {
            aggregate,
            version,
            event,
        } in planned
        {
            let event_id = Uuid::now_v7();
            refs.push(EventRef {
                event_id,
                event_type: event.event_type().to_owned(),
                aggregate_id: (aggregate.id != target.id).then_some(aggregate.id),
                version,
            });
            events.push(NewEvent {
                event_id,
                aggregate_type: aggregate.kind.as_str().to_owned(),
                aggregate_id: aggregate.id,
                version,
                event_type: event.event_type().to_owned(),
                schema_version: flexcore_contracts::events::SCHEMA_VERSION,
                data: event.data(),
                metadata: metadata.clone(),
            });
        }
        check_sizes(command, &events, ctx.bus_limit)?;
        let reply = match meta.command_id {
            Some(_) => Some(
                serde_json::to_value(accepted(target, target_version, refs.clone(), 0))
                    .map_err(|e| internal(e.to_string()))?,
            ),
            None => None,
        };
        let key = |k: domain::UniqueKey| UniqueKey {
            scope: k.scope,
            key: k.key,
            owner: k.owner,
        };
        let slot = |s: domain::SlotClaim| SlotClaim {
            pool: s.pool,
            holder: s.holder,
            max: s.max,
        };
        let request = AppendRequest {
            command_id: meta.command_id,
            command_type: command.name().to_owned(),
            payload_hash: job.payload_hash.clone(),
            events,
            claims: constraints.claim_unique.into_iter().map(key).collect(),
            releases: constraints.release_unique.into_iter().map(key).collect(),
            slot_acquire: constraints.acquire_slot.map(slot),
            slot_release: constraints.release_slot.map(slot),
            reply,
            checks,
        };
        Ok((request, refs))
    }

    /// The end of a dry run: what the append would check that the decision does not (a
    /// unique name taken, an event too large to publish), then the reply the command would
    /// get, marked `dry_run`, with nothing written and no command id recorded.
    async fn dry_run(&self, job: &Job<'_>, plan: Plan) -> Result<CommandReply, ErrorBody> {
        let Plan {
            events,
            constraints,
            checks,
            target_version,
            ..
        } = plan;
        for claim in &constraints.claim_unique {
            let Some(owner) = self
                .store
                .unique_owner(&claim.scope, &claim.key)
                .await
                .map_err(store_error)?
            else {
                continue;
            };
            let released = constraints
                .release_unique
                .iter()
                .any(|r| r.scope == claim.scope && r.key == claim.key && r.owner == owner);
            if !released {
                let error = unique_taken(claim.scope.clone(), claim.key.clone(), Some(owner));
                return Ok(CommandReply::rejected(error));
            }
        }
        let (_, refs) = self.request(job, events, constraints, checks, target_version)?;
        let mut reply = accepted(job.target, target_version, refs, 0);
        if let CommandReply::Accepted(accepted) = &mut reply {
            accepted.dry_run = true;
        }
        Ok(reply)
    }

    /// A refusal, unless the command id was already processed: then its first reply.
    async fn refuse(&self, job: &Job<'_>, error: ErrorBody) -> Result<CommandReply, ErrorBody> {
        if let Some(id) = job.meta.command_id {
            if let Some(stored) = self.store.command(id).await.map_err(store_error)? {
                return duplicate(job, &stored.command_type, &stored.payload_hash, stored.reply);
            }
        }
        Ok(CommandReply::rejected(error))
    }
}

/// Refuses a command whose STATE leaves no room for the events that will carry it, or any
/// of whose events would be a message the NATS server refuses (the relay could never
/// publish it, and every later event would wait behind it).
fn check_sizes(command: &Command, events: &[NewEvent], bus_limit: usize) -> Result<(), ErrorBody> {
    let state = match command {
        Command::CommitPipelineState(c) => Some(&c.state),
        Command::CheckpointRun(c) => Some(&c.state),
        _ => None,
    };
    let state_limit = bus_limit.saturating_sub(STATE_RESERVE);
    if let Some(state) = state.filter(|s| s.as_str().len() > state_limit) {
        return Err(too_large(
            format!(
                "the state is {} bytes; a STATE may have at most {state_limit} bytes (the NATS server's max_payload of {bus_limit} bytes less {STATE_RESERVE} for the events that carry it)",
                state.as_str().len()
            ),
            state.as_str().len(),
            state_limit,
        )
        .with_path("/state"));
    }
    for event in events {
        // Everything besides the data is bounded well below this margin: only an event
        // with large data needs its message measured.
        if event.data.as_str().len() + STATE_RESERVE < bus_limit {
            continue;
        }
        let size = flexcore_eventstore::relay::published_size_bound(event).map_err(|e| internal(e.to_string()))?;
        if size > bus_limit {
            return Err(too_large(
                format!(
                    "the command's {} event would be a {size}-byte message; the NATS server accepts at most {bus_limit} bytes: send less data",
                    event.event_type
                ),
                size,
                bus_limit,
            )
            .with("event_type", event.event_type.clone()));
        }
    }
    Ok(())
}

/// The refusal of a command claiming a unique key (a pipeline name) someone holds.
fn unique_taken(scope: String, key: String, owner: Option<Uuid>) -> ErrorBody {
    let owner = owner
        .map(|o| o.to_string())
        .unwrap_or_else(|| "another aggregate".into());
    ErrorBody::new(
        ErrorReason::Unique,
        format!(
            "{} {key:?} is already used by {owner}; choose another",
            scope.replace('_', " ")
        ),
    )
    .with("scope", scope)
    .with("key", key)
    .with("owner", owner)
}

fn too_large(message: String, size: usize, limit: usize) -> ErrorBody {
    ErrorBody::new(ErrorReason::TooLarge, message)
        .with("size", size)
        .with("limit", limit)
}

fn duplicate(
    job: &Job<'_>,
    stored_type: &str,
    stored_hash: &str,
    reply: serde_json::Value,
) -> Result<CommandReply, ErrorBody> {
    if stored_type != job.command.name() || stored_hash != job.payload_hash {
        return Ok(CommandReply::rejected(ErrorBody::new(
            ErrorReason::CommandIdReused,
            format!("command_id was already used for a different command ({stored_type}); use a new id"),
        )));
    }
    parse_reply(reply)
}

/// The reply to an accepted command.
fn accepted(target: AggRef, version: u64, events: Vec<EventRef>, global_position: u64) -> CommandReply {
    CommandReply::Accepted(Accepted {
        ok: true,
        aggregate_id: target.id,
        version,
        global_position,
        events,
        dry_run: false,
    })
}

fn parse_reply(reply: serde_json::Value) -> Result<CommandReply, ErrorBody> {
    serde_json::from_value(reply).map_err(|e| internal(format!("stored reply unreadable: {e}")))
}

fn internal(message: String) -> ErrorBody {
    ErrorBody::new(ErrorReason::Internal, message)
}

/// A store failure as a reply: `unavailable` when Postgres cannot be reached, went away
/// or is restarting (`StoreError::is_unavailable`), else `internal`.
fn store_error(error: StoreError) -> ErrorBody {
    if error.is_unavailable() {
        tracing::debug!(%error, "event store unavailable");
        ErrorBody::new(
            ErrorReason::Unavailable,
            format!("the event store is unavailable ({error}); retry later"),
        )
    } else {
        tracing::error!(%error, "event store failure");
        internal(format!("event store failure: {error}"))
    }
}

fn load_error(error: LoadError) -> ErrorBody {
    match error {
        LoadError::Store(e) => store_error(e),
        LoadError::Domain(e) => {
            tracing::error!(error = %e, "stored events cannot be folded");
            e.to_error_body()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_caches_turn_reading_first_on_and_current_ones_turn_it_off() {
        let staleness = Staleness::default();
        assert!(!staleness.read_first(), "a new replica decides on its cache");
        for _ in 0..STALE_LIMIT {
            staleness.record(true);
        }
        assert!(!staleness.read_first(), "{STALE_LIMIT} stale of 64 is within the limit");
        staleness.record(true);
        assert!(staleness.read_first());
        // Current checks push the stale ones out of the last 64.
        for _ in 0..64 - (STALE_LIMIT + 1) {
            staleness.record(false);
        }
        assert!(
            staleness.read_first(),
            "all the stale checks are still among the last 64"
        );
        staleness.record(false);
        assert!(!staleness.read_first(), "the first stale check dropped out");
    }
}
