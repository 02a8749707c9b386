//! [`EventStore`]: reads of the log and appends through the group committer.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::append::{GroupCommitConfig, GroupCommitter};
use crate::error::StoreError;
use crate::model::{AppendOutcome, AppendRequest, Checkpoint, RecordedEvent, StoredCommand};
use crate::read::GroupReader;

/// Columns of a [`RecordedEvent`], with the xid8 cast to a bigint (a macro so the
/// statements below are assembled at compile time).
macro_rules! event_columns {
    () => {
        "global_position, transaction_id::text::bigint AS transaction_id, event_id, \
         aggregate_type, aggregate_id, version, event_type, schema_version, data, metadata, recorded_at"
    };
}

/// Several aggregates' events, each after its own version, in (aggregate, version) order.
/// LATERAL keeps the plan an index lookup per aggregate, also as a generic prepared plan
/// (a join against `unnest` may turn into a scan of the whole log).
const READ_AGGREGATES_SQL: &str = concat!(
    "SELECT e.* FROM unnest($1::uuid[], $2::bigint[]) WITH ORDINALITY AS wanted(wanted_id, wanted_after, n) \
     CROSS JOIN LATERAL (SELECT ",
    event_columns!(),
    " FROM events WHERE aggregate_id = wanted.wanted_id AND version > wanted.wanted_after ORDER BY version) e \
     ORDER BY wanted.n, e.version"
);

/// Reads the global log after `after` in (transaction_id, global_position) order, only
/// below the oldest running transaction: an event whose transaction is still open blocks
/// every later one, so none is ever skipped.
///
/// `ORDER BY` names the table's columns (`events.transaction_id`): a bare
/// `transaction_id` would be the select list's `transaction_id::text::bigint` alias,
/// which no index provides, so every read sorted all the events after the checkpoint
/// (about 0.2 s a batch with a backlog of half a million, as the generic plan of the
/// prepared statement; the relay published a backlog at 2.6k events/s).
pub const READ_ALL_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events \
     WHERE (transaction_id, global_position) > ($1::text::xid8, $2) \
       AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
     ORDER BY events.transaction_id, events.global_position \
     LIMIT $3"
);

/// A row of `events` as [`event_columns!`] selects it.
#[derive(sqlx::FromRow)]
struct EventRow {
    global_position: i64,
    transaction_id: i64,
    event_id: Uuid,
    aggregate_type: String,
    aggregate_id: Uuid,
    version: i64,
    event_type: String,
    schema_version: i32,
    #[sqlx(json)]
    data: flexcore_contracts::OpaqueJson,
    #[sqlx(json)]
    metadata: flexcore_contracts::EventMetadata,
    recorded_at: DateTime<Utc>,
}

impl From<EventRow> for RecordedEvent {
    fn from(row: EventRow) -> Self {
        Self {
            global_position: from_i64(row.global_position),
            transaction_id: from_i64(row.transaction_id),
            event_id: row.event_id,
            aggregate_type: row.aggregate_type,
            aggregate_id: row.aggregate_id,
            version: from_i64(row.version),
            event_type: row.event_type,
            schema_version: u32::try_from(row.schema_version).unwrap_or(0),
            data: row.data,
            metadata: row.metadata,
            recorded_at: row.recorded_at,
        }
    }
}

/// The event store. Cheap to clone.
#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    committer: GroupCommitter,
    reader: GroupReader,
}

impl EventStore {
    /// Wraps a pool and starts the group committer.
    pub fn new(pool: PgPool, config: GroupCommitConfig) -> Self {
        let committer = GroupCommitter::start(pool.clone(), config);
        let reader = GroupReader::start(pool.clone(), committer.expected(), config.linger);
        Self {
            pool,
            committer,
            reader,
        }
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Announces an append that will probably follow soon (see
    /// [`GroupCommitter::announce`]).
    pub fn announce_append(&self) -> crate::Announced {
        self.committer.announce()
    }

    /// Appends one command's writes atomically; concurrent calls share commits.
    pub async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.committer.append(request).await
    }

    /// [`EventStore::append`] of an announced append (see
    /// [`GroupCommitter::append_announced`]).
    pub async fn append_announced(
        &self,
        request: AppendRequest,
        announced: Option<crate::Announced>,
    ) -> Result<AppendOutcome, StoreError> {
        self.committer.append_announced(request, announced).await
    }

    /// Events of one aggregate with a version above `after_version`, in version order.
    pub async fn read_aggregate(
        &self,
        aggregate_id: Uuid,
        after_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_aggregates(&[(aggregate_id, after_version)]).await
    }

    /// The events of several aggregates, each above its own version, grouped by aggregate
    /// in the order asked, then by version: one query, shared with the reads other
    /// commands make at the same time (the group reader).
    pub async fn read_aggregates(&self, wanted: &[(Uuid, u64)]) -> Result<Vec<RecordedEvent>, StoreError> {
        self.reader.read(wanted.to_vec()).await
    }

    /// Up to `limit` events of the global log after `after`, never skipping one that
    /// commits later with a lower position.
    pub async fn read_all(&self, after: Checkpoint, limit: i64) -> Result<Vec<RecordedEvent>, StoreError> {
        read_all_with(&self.pool, after, limit).await
    }

    /// The command-log entry of `command_id`, if it was processed.
    pub async fn command(&self, command_id: Uuid) -> Result<Option<StoredCommand>, StoreError> {
        Ok(
            sqlx::query_as("SELECT command_type, payload_hash, reply FROM command_log WHERE command_id = $1")
                .bind(command_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Who holds unique key `key` of `scope` (a pipeline name), if anyone: what an append
    /// claiming it would find. A dry run asks this instead of appending.
    pub async fn unique_owner(&self, scope: &str, key: &str) -> Result<Option<Uuid>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT owner FROM unique_keys WHERE scope = $1 AND key = $2")
                .bind(scope)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The highest committed global position (0 when empty).
    pub async fn head_position(&self) -> Result<u64, StoreError> {
        let max: Option<i64> = sqlx::query_scalar("SELECT max(global_position) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(max.map_or(0, from_i64))
    }
}

/// The events of each of `wanted`'s aggregates after its version, in one query.
pub(crate) async fn read_aggregates_with(
    pool: &PgPool,
    wanted: &[(Uuid, u64)],
) -> Result<Vec<RecordedEvent>, StoreError> {
    let ids: Vec<Uuid> = wanted.iter().map(|(id, _)| *id).collect();
    let after: Vec<i64> = wanted.iter().map(|(_, v)| to_i64(*v)).collect();
    let rows: Vec<EventRow> = sqlx::query_as(READ_AGGREGATES_SQL)
        .bind(ids)
        .bind(after)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(RecordedEvent::from).collect())
}

/// [`EventStore::read_all`] on any executor (the relay and the projections use their own
/// connections).
pub async fn read_all_with<'e, E>(executor: E, after: Checkpoint, limit: i64) -> Result<Vec<RecordedEvent>, StoreError>
where
    E: sqlx::PgExecutor<'e>,
{
    let rows: Vec<EventRow> = sqlx::query_as(READ_ALL_SQL)
        .bind(after.transaction_id.to_string())
        .bind(to_i64(after.global_position))
        .bind(limit)
        .fetch_all(executor)
        .await?;
    Ok(rows.into_iter().map(RecordedEvent::from).collect())
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn from_i64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
