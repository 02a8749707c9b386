//! Loads aggregates: a bounded in-memory cache of folded states plus the tail of their
//! events from Postgres. The addressed aggregate may be decided on the cached state
//! without a read (optimistic): the append's version check catches a stale cache, and the
//! executor then reloads and decides again.

use std::collections::HashMap;
use std::num::NonZeroUsize;

use flexcore_eventstore::{EventStore, StoreError};
use lru::LruCache;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::domain::{AggregateState, AnyEvent, DomainError, Versioned};

/// Why an aggregate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event could not be folded.
    #[error(transparent)]
    Domain(#[from] DomainError),
}

/// Aggregate loader with an LRU cache of folded states.
pub struct AggregateCache {
    store: EventStore,
    states: Mutex<LruCache<Uuid, Versioned>>,
}

impl AggregateCache {
    /// A cache holding at most `capacity` aggregates.
    pub fn new(store: EventStore, capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            store,
            states: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// The cached state, without touching the database.
    pub fn cached(&self, id: Uuid) -> Option<Versioned> {
        self.states.lock().get(&id).cloned()
    }

    /// The cached state's version, without cloning the state.
    pub fn cached_version(&self, id: Uuid) -> Option<u64> {
        self.states.lock().peek(&id).map(|v| v.version)
    }

    /// The current state: the cached state brought up to date with the events appended
    /// since. `None` when the aggregate has no events.
    pub async fn load_fresh(&self, id: Uuid) -> Result<Option<Versioned>, LoadError> {
        Ok(self.load_fresh_many(&[id]).await?.remove(&id))
    }

    /// [`Self::load_fresh`] for several aggregates in one round trip; aggregates without
    /// events are absent from the map.
    pub async fn load_fresh_many(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Versioned>, LoadError> {
        let mut states: HashMap<Uuid, Versioned> = ids.iter().filter_map(|id| Some((*id, self.cached(*id)?))).collect();
        let wanted: Vec<(Uuid, u64)> = ids
            .iter()
            .map(|id| (*id, states.get(id).map_or(0, |v| v.version)))
            .collect();
        let events = self.store.read_aggregates(&wanted).await?;
        let mut changed = Vec::new();
        for e in &events {
            let event = AnyEvent::from_stored(&e.aggregate_type, &e.event_type, e.schema_version, &e.data)?;
            let current = states.remove(&e.aggregate_id).map(|v| v.state);
            let state = AggregateState::evolve(current, &event)?;
            states.insert(
                e.aggregate_id,
                Versioned {
                    version: e.version,
                    state,
                },
            );
            changed.push(e.aggregate_id);
        }
        changed.dedup();
        let mut cache = self.states.lock();
        for id in changed {
            if let Some(v) = states.get(&id) {
                cache.put(id, v.clone());
            }
        }
        Ok(states)
    }

    /// Records states this service just committed, so the next command on them needs no read.
    pub fn store_committed(&self, id: Uuid, versioned: Versioned) {
        let mut states = self.states.lock();
        // Never move a cached state backwards (a concurrent load may have seen more).
        if states.peek(&id).is_none_or(|cur| cur.version < versioned.version) {
            states.put(id, versioned);
        }
    }

    /// Forgets an aggregate (after a version conflict).
    pub fn invalidate(&self, id: Uuid) {
        self.states.lock().pop(&id);
    }
}
