//! The projections: which tables each owns and how a batch of events changes them.
//!
//! The four entity projections (plugins, pipelines, runs, schedules) share one engine
//! ([`apply_entities`]): load the rows a batch touches in one query, fold the events into
//! them in memory (skipping any event at or below a row's aggregate version), then upsert
//! the changed rows and the per-state counts with one statement each. The audit
//! projection inserts every event. Both are pure row work inside a caller's transaction;
//! checkpoints are the worker's business.

use std::collections::{BTreeMap, HashMap};

use flexcore_eventstore::RecordedEvent;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::tables::TableSpec;

/// One projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The plugin catalogue.
    Plugins,
    /// Pipelines.
    Pipelines,
    /// Runs.
    Runs,
    /// Schedules.
    Schedules,
    /// Every event, by aggregate, type and time.
    Audit,
}

impl Kind {
    /// Every projection.
    pub const ALL: [Kind; 5] = [Kind::Plugins, Kind::Pipelines, Kind::Runs, Kind::Schedules, Kind::Audit];

    /// Its name (in `read.projections`, subjects and `flexctl projection rebuild`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Plugins => "plugins",
            Kind::Pipelines => "pipelines",
            Kind::Runs => "runs",
            Kind::Schedules => "schedules",
            Kind::Audit => "audit",
        }
    }

    /// The projection called `name`.
    pub fn parse(name: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Its table.
    pub fn table(self) -> &'static TableSpec {
        match self {
            Kind::Plugins => &<contracts_views::PluginView as Entity>::SPEC,
            Kind::Pipelines => &<contracts_views::PipelineView as Entity>::SPEC,
            Kind::Runs => &<contracts_views::RunView as Entity>::SPEC,
            Kind::Schedules => &<contracts_views::ScheduleView as Entity>::SPEC,
            Kind::Audit => &AUDIT,
        }
    }

    /// Session advisory-lock key of its leader.
    pub fn lock_key(self) -> i64 {
        // "fxproj" + the projection's index: distinct from the relay's key.
        0x6678_7072_6f6a_0000 + self as i64
    }

    /// Transaction advisory-lock key of its rebuild's record: each rebuild batch holds it
    /// shared, a leader taking the rebuild over holds it alone while it rewrites the
    /// record ([`crate::rebuild`]).
    pub fn rebuild_lock_key(self) -> i64 {
        self.lock_key() + 0x100
    }

    /// Whether any of `events` changes this projection's rows.
    pub fn concerns(self, events: &[&RecordedEvent]) -> bool {
        let aggregate = match self {
            Kind::Plugins => "plugin",
            Kind::Pipelines => "pipeline",
            Kind::Runs => "run",
            Kind::Schedules => "schedule",
            Kind::Audit => return !events.is_empty(),
        };
        events.iter().any(|e| e.aggregate_type == aggregate)
    }

    /// Applies a batch (in reading order) to generation `generation`; returns how many
    /// events changed something.
    pub async fn apply(
        self,
        conn: &mut PgConnection,
        generation: u32,
        events: &[&RecordedEvent],
    ) -> Result<u64, ProjectionError> {
        match self {
            Kind::Plugins => apply_entities::<contracts_views::PluginView>(conn, generation, events).await,
            Kind::Pipelines => apply_entities::<contracts_views::PipelineView>(conn, generation, events).await,
            Kind::Runs => apply_entities::<contracts_views::RunView>(conn, generation, events).await,
            Kind::Schedules => apply_entities::<contracts_views::ScheduleView>(conn, generation, events).await,
            Kind::Audit => apply_audit(conn, generation, events).await,
        }
    }
}

use flexcore_contracts::views as contracts_views;

/// A read-model row type folded from one aggregate's events.
pub trait Entity: Serialize + DeserializeOwned + Send + Sync + Unpin + Sized + 'static {
    /// Its table. The JSON of a row supplies the columns by name, plus `doc` (itself).
    const SPEC: TableSpec;
    /// The aggregate whose events build it.
    const AGGREGATE: &'static str;
    /// The row created by an aggregate's first event.
    fn create(event: &RecordedEvent) -> Result<Self, String>;
    /// Folds a later event.
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), String>;
    /// Its id (the key column).
    fn id(&self) -> Uuid;
    /// Its state (for the per-state counts).
    fn state(&self) -> &str;
    /// The aggregate version it reflects.
    fn aggregate_version(&self) -> u64;
    /// What this row's change from `old_state` (`None`: a new row) adds to the per-minute
    /// activity table, for a table that has one.
    fn activity(&self, _old_state: Option<&str>) -> Activity {
        Activity::default()
    }
}

/// A row's contribution to its table's per-minute activity: requested at, finished at,
/// and whether it finished failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// The row is new: it was requested at this time.
    pub requested: Option<chrono::DateTime<chrono::Utc>>,
    /// The row has just ended, at this time.
    pub finished: Option<chrono::DateTime<chrono::Utc>>,
    /// It ended failed (or timed out).
    pub failed: bool,
}

/// The minute `at` falls in.
fn minute_of(at: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::DurationRound as _;
    at.duration_trunc(chrono::TimeDelta::minutes(1)).unwrap_or(at)
}

fn event_error(event: &RecordedEvent, message: String) -> ProjectionError {
    ProjectionError::Event {
        position: event.global_position,
        event_type: event.event_type.clone(),
        message,
    }
}

/// The load → fold → upsert engine of the entity projections.
pub async fn apply_entities<E: Entity>(
    conn: &mut PgConnection,
    generation: u32,
    events: &[&RecordedEvent],
) -> Result<u64, ProjectionError> {
    let relevant: Vec<&RecordedEvent> = events
        .iter()
        .copied()
        .filter(|e| e.aggregate_type == E::AGGREGATE)
        .collect();
    if relevant.is_empty() {
        return Ok(0);
    }
    let mut ids: Vec<Uuid> = relevant.iter().map(|e| e.aggregate_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let spec = &E::SPEC;
    let loaded: Vec<Json<E>> = sqlx::query_scalar(&format!(
        "SELECT doc FROM {} WHERE {} = ANY($1)",
        spec.table(generation),
        spec.key
    ))
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut rows: HashMap<Uuid, E> = HashMap::with_capacity(ids.len());
    let mut old_states: HashMap<Uuid, String> = HashMap::with_capacity(ids.len());
    for Json(row) in loaded {
        let id = row.id();
        old_states.insert(id, row.state().to_owned());
        rows.insert(id, row);
    }
    let mut dirty: Vec<Uuid> = Vec::new();
    let mut applied = 0;
    for event in relevant {
        let id = event.aggregate_id;
        match rows.get_mut(&id) {
            Some(row) => {
                if event.version <= row.aggregate_version() {
                    continue; // already reflected: a redelivery or an overlap after a swap
                }
                row.apply(event).map_err(|m| event_error(event, m))?;
            }
            None => {
                if event.version != 1 {
                    return Err(event_error(
                        event,
                        format!(
                            "no {} row for aggregate {id} before version {}",
                            E::AGGREGATE,
                            event.version
                        ),
                    ));
                }
                let row = E::create(event).map_err(|m| event_error(event, m))?;
                rows.insert(id, row);
            }
        }
        applied += 1;
        if !dirty.contains(&id) {
            dirty.push(id);
        }
    }
    if dirty.is_empty() {
        return Ok(0);
    }
    let mut docs = Vec::with_capacity(dirty.len());
    let mut deltas: BTreeMap<String, i64> = BTreeMap::new();
    // Per minute: requested, finished, failed.
    let mut minutes: BTreeMap<chrono::DateTime<chrono::Utc>, [i64; 3]> = BTreeMap::new();
    for id in &dirty {
        let Some(row) = rows.get(id) else { continue };
        docs.push(row_with_doc(&serde_json::to_string(row)?));
        if spec.minutes {
            let activity = row.activity(old_states.get(id).map(String::as_str));
            if let Some(at) = activity.requested {
                minutes.entry(minute_of(at)).or_default()[0] += 1;
            }
            if let Some(at) = activity.finished {
                let tally = minutes.entry(minute_of(at)).or_default();
                tally[1] += 1;
                tally[2] += i64::from(activity.failed);
            }
        }
        let new_state = row.state();
        match old_states.get(id) {
            Some(old) if old == new_state => {}
            Some(old) => {
                *deltas.entry(old.clone()).or_default() -= 1;
                *deltas.entry(new_state.to_owned()).or_default() += 1;
            }
            None => *deltas.entry(new_state.to_owned()).or_default() += 1,
        }
    }
    sqlx::query(&spec.upsert_sql(generation))
        .bind(json_array(&docs))
        .execute(&mut *conn)
        .await?;
    deltas.retain(|_, d| *d != 0);
    if !deltas.is_empty() {
        let counts = spec.counts_table(generation);
        let (states, changes): (Vec<String>, Vec<i64>) = deltas.into_iter().unzip();
        sqlx::query(&format!(
            "INSERT INTO {counts} (state, count) SELECT * FROM unnest($1::text[], $2::bigint[]) \
             ON CONFLICT (state) DO UPDATE SET count = {counts}.count + EXCLUDED.count"
        ))
        .bind(&states)
        .bind(&changes)
        .execute(&mut *conn)
        .await?;
    }
    if !minutes.is_empty() {
        let table = spec.minutes_table(generation);
        let at: Vec<_> = minutes.keys().copied().collect();
        let column = |i: usize| minutes.values().map(|t| t[i]).collect::<Vec<i64>>();
        sqlx::query(&format!(
            "INSERT INTO {table} (minute, requested, finished, failed) \
             SELECT * FROM unnest($1::timestamptz[], $2::bigint[], $3::bigint[], $4::bigint[]) \
             ON CONFLICT (minute) DO UPDATE SET requested = {table}.requested + EXCLUDED.requested, \
             finished = {table}.finished + EXCLUDED.finished, failed = {table}.failed + EXCLUDED.failed"
        ))
        .bind(&at)
        .bind(column(0))
        .bind(column(1))
        .bind(column(2))
        .execute(&mut *conn)
        .await?;
        // Only the last day is read: a replay of older events leaves nothing behind.
        let horizon = chrono::Utc::now() - chrono::TimeDelta::days(2);
        if at.first().is_some_and(|first| *first < horizon) {
            sqlx::query(&format!("DELETE FROM {table} WHERE minute < $1"))
                .bind(horizon)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(applied)
}

/// The row object a table's upsert reads: the document's own fields (the columns, by
/// name) plus `doc`, the document itself, as text, so client data in it stays exact.
fn row_with_doc(doc: &str) -> String {
    let body = doc.trim_end().strip_suffix('}').unwrap_or(doc);
    let separator = if body.trim_end().ends_with('{') { "" } else { "," };
    format!("{body}{separator}\"doc\":{doc}}}")
}

/// A JSON array of JSON texts.
fn json_array(items: &[String]) -> String {
    let mut out = String::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push(']');
    out
}

/// The audit log: every event, by aggregate, type and time.
pub const AUDIT: TableSpec = TableSpec {
    base: "events",
    key: "global_position",
    columns: &[
        ("global_position", "bigint NOT NULL"),
        ("transaction_id", "bigint NOT NULL"),
        ("event_id", "uuid NOT NULL"),
        ("aggregate_type", "text NOT NULL"),
        ("aggregate_id", "uuid NOT NULL"),
        ("version", "bigint NOT NULL"),
        ("event_type", "text NOT NULL"),
        ("recorded_at", "timestamptz NOT NULL"),
        ("doc", "json NOT NULL"),
    ],
    indexes: &[
        "(aggregate_id, global_position)",
        "(aggregate_type, global_position)",
        "(event_type, global_position)",
        "(recorded_at, global_position)",
    ],
    counts: false,
    minutes: false,
    derived: &[],
};

async fn apply_audit(
    conn: &mut PgConnection,
    generation: u32,
    events: &[&RecordedEvent],
) -> Result<u64, ProjectionError> {
    if events.is_empty() {
        return Ok(0);
    }
    /// One audit row: its columns and the envelope as `doc`.
    #[derive(Serialize)]
    struct AuditRow<'a> {
        global_position: u64,
        transaction_id: u64,
        event_id: Uuid,
        aggregate_type: &'a str,
        aggregate_id: Uuid,
        version: u64,
        event_type: &'a str,
        recorded_at: chrono::DateTime<chrono::Utc>,
        doc: flexcore_contracts::EventEnvelope,
    }
    let mut rows = Vec::with_capacity(events.len());
    for e in events {
        rows.push(serde_json::to_string(&AuditRow {
            global_position: e.global_position,
            transaction_id: e.transaction_id,
            event_id: e.event_id,
            aggregate_type: &e.aggregate_type,
            aggregate_id: e.aggregate_id,
            version: e.version,
            event_type: &e.event_type,
            recorded_at: e.recorded_at,
            doc: e.to_envelope(),
        })?);
    }
    let table = AUDIT.table(generation);
    let done = sqlx::query(&format!(
        "INSERT INTO {table} SELECT * FROM json_populate_recordset(NULL::{table}, $1::json) \
         ON CONFLICT (global_position) DO NOTHING"
    ))
    .bind(json_array(&rows))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}
