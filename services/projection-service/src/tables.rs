//! Table layouts of the read models and their generations.
//!
//! A projection's rows live in `read.<base>_g<N>` (plus `read.<base>_counts_g<N>`, rows
//! per state, for the entity views). Queries read the views `read.<base>` and
//! `read.<base>_counts`; a rebuild fills generation N+1 while N keeps serving, then
//! re-points the views in the same transaction that moves the checkpoint.

use futures::future::BoxFuture;
use sqlx::{Connection as _, PgConnection, PgPool};

use crate::error::ProjectionError;

/// Layout of one read-model table.
#[derive(Debug)]
pub struct TableSpec {
    /// Base name: the view is `read.<base>`.
    pub base: &'static str,
    /// Primary-key column.
    pub key: &'static str,
    /// Column definitions (the primary key first, `doc json` last).
    pub columns: &'static [(&'static str, &'static str)],
    /// Secondary indexes, as column lists (created after a rebuild's bulk load).
    pub indexes: &'static [&'static str],
    /// Whether a per-state counts table goes with it.
    pub counts: bool,
    /// Whether a per-minute activity table goes with it (`read.<base>_minutes`: rows
    /// requested, finished and failed in each minute; see `Entity::activity`).
    pub minutes: bool,
    /// Nullable columns not taken from the document but kept up to date from other
    /// projections' rows (see `crate::derived`): created with the table, left out of
    /// the upsert (a new row has them null, an updated row keeps them).
    pub derived: &'static [(&'static str, &'static str)],
}

impl TableSpec {
    /// A fingerprint of the layout (columns with their types, indexes, side tables),
    /// recorded in `read.projections.layout` with the generation built to it: when the
    /// code's layout differs from the recorded one, the projection is rebuilt.
    pub fn layout(&self) -> String {
        use sha2::Digest as _;
        let text = format!(
            "key {}; columns {:?}; indexes {:?}; counts {}; minutes {}{}",
            self.key,
            self.columns,
            self.indexes,
            self.counts,
            self.minutes,
            // Absent from the text when empty: the layouts recorded before derived
            // columns existed stay current.
            if self.derived.is_empty() {
                String::new()
            } else {
                format!("; derived {:?}", self.derived)
            }
        );
        hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8])
    }

    /// Physical table of a generation.
    pub fn table(&self, generation: u32) -> String {
        format!("read.{}_g{generation}", self.base)
    }

    /// Physical counts table of a generation.
    pub fn counts_table(&self, generation: u32) -> String {
        format!("read.{}_counts_g{generation}", self.base)
    }

    /// Physical per-minute activity table of a generation.
    pub fn minutes_table(&self, generation: u32) -> String {
        format!("read.{}_minutes_g{generation}", self.base)
    }

    /// The per-minute activity view queries read.
    pub fn minutes_view(&self) -> String {
        format!("read.{}_minutes", self.base)
    }

    /// `CREATE TABLE` of a generation's per-minute activity table.
    pub fn minutes_create_sql(&self, generation: u32) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (minute timestamptz PRIMARY KEY, requested bigint NOT NULL DEFAULT 0, \
             finished bigint NOT NULL DEFAULT 0, failed bigint NOT NULL DEFAULT 0)",
            self.minutes_table(generation)
        )
    }

    /// Every column of the table: the document's, then the derived ones.
    pub fn all_columns(&self) -> impl Iterator<Item = &(&'static str, &'static str)> {
        self.columns.iter().chain(self.derived)
    }

    /// The view queries read.
    pub fn view(&self) -> String {
        format!("read.{}", self.base)
    }

    /// The counts view queries read.
    pub fn counts_view(&self) -> String {
        format!("read.{}_counts", self.base)
    }

    /// `INSERT … SELECT FROM json_populate_recordset … ON CONFLICT (key) DO UPDATE`:
    /// upserts rows given as one JSON array (text) of objects whose keys are column names.
    /// `json`, not `jsonb`: the `doc` column keeps the document's text exactly.
    pub fn upsert_sql(&self, generation: u32) -> String {
        let table = self.table(generation);
        let set = self
            .columns
            .iter()
            .filter(|(name, _)| *name != self.key)
            .map(|(name, _)| format!("{name} = EXCLUDED.{name}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {table} SELECT * FROM json_populate_recordset(NULL::{table}, $1::json) \
             ON CONFLICT ({key}) DO UPDATE SET {set}",
            key = self.key
        )
    }

    fn create_sql(&self, generation: u32) -> Vec<String> {
        let table = self.table(generation);
        let columns = self
            .all_columns()
            .map(|(name, ty)| format!("{name} {ty}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sql = vec![
            format!("DROP TABLE IF EXISTS {table}"),
            // Rows of busy aggregates are rewritten with every batch (their indexed
            // state/updated_at change, so updates are not HOT): vacuum them by dead-row
            // count, not by a fraction of a table that may hold few live rows.
            format!(
                "CREATE TABLE {table} ({columns}, PRIMARY KEY ({})) \
                 WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000)",
                self.key
            ),
        ];
        if self.counts {
            let counts = self.counts_table(generation);
            sql.push(format!("DROP TABLE IF EXISTS {counts}"));
            sql.push(format!(
                "CREATE TABLE {counts} (state text PRIMARY KEY, count bigint NOT NULL)"
            ));
        }
        if self.minutes {
            sql.push(format!("DROP TABLE IF EXISTS {}", self.minutes_table(generation)));
            sql.push(self.minutes_create_sql(generation));
        }
        sql
    }

    fn index_sql(&self, generation: u32) -> Vec<String> {
        let table = self.table(generation);
        self.indexes
            .iter()
            .map(|cols| format!("CREATE INDEX ON {table} {cols}"))
            .chain(std::iter::once(format!("ANALYZE {table}")))
            .collect()
    }

    fn swap_sql(&self, generation: u32) -> Vec<String> {
        let mut sql = vec![
            format!("DROP VIEW IF EXISTS {}", self.view()),
            format!(
                "CREATE VIEW {} AS SELECT * FROM {}",
                self.view(),
                self.table(generation)
            ),
        ];
        if self.counts {
            sql.push(format!("DROP VIEW IF EXISTS {}", self.counts_view()));
            sql.push(format!(
                "CREATE VIEW {} AS SELECT * FROM {}",
                self.counts_view(),
                self.counts_table(generation)
            ));
        }
        if self.minutes {
            sql.push(format!("DROP VIEW IF EXISTS {}", self.minutes_view()));
            sql.push(format!(
                "CREATE VIEW {} AS SELECT * FROM {}",
                self.minutes_view(),
                self.minutes_table(generation)
            ));
        }
        sql
    }

    fn drop_sql(&self, generation: u32) -> Vec<String> {
        let mut sql = vec![format!("DROP TABLE IF EXISTS {}", self.table(generation))];
        if self.counts {
            sql.push(format!("DROP TABLE IF EXISTS {}", self.counts_table(generation)));
        }
        if self.minutes {
            sql.push(format!("DROP TABLE IF EXISTS {}", self.minutes_table(generation)));
        }
        sql
    }
}

/// Runs DDL statements in order. Boxed, and through `query` rather than `raw_sql`, whose
/// generic executor bound makes spawned callers fail the higher-ranked `Send` check.
fn execute_all(conn: &mut PgConnection, statements: Vec<String>) -> BoxFuture<'_, Result<(), ProjectionError>> {
    Box::pin(async move {
        for statement in statements {
            sqlx::query(&statement).persistent(false).execute(&mut *conn).await?;
        }
        Ok(())
    })
}

/// Creates (empty, replacing leftovers) the tables of a generation, without secondary
/// indexes when `indexed` is false (a rebuild adds them after the bulk load).
pub async fn create_generation(
    conn: &mut PgConnection,
    spec: &TableSpec,
    generation: u32,
    indexed: bool,
) -> Result<(), ProjectionError> {
    execute_all(conn, spec.create_sql(generation)).await?;
    if indexed {
        execute_all(conn, spec.index_sql(generation)).await?;
    }
    Ok(())
}

/// Adds the secondary indexes of a generation and analyses it.
pub async fn index_generation(
    conn: &mut PgConnection,
    spec: &TableSpec,
    generation: u32,
) -> Result<(), ProjectionError> {
    execute_all(conn, spec.index_sql(generation)).await
}

/// Adds the secondary indexes of a generation, up to `connections` at a time (each on a
/// pooled connection of its own, with room for its sort in memory), then analyses it: a
/// rebuild's last step before it pauses the live worker.
pub async fn index_generation_in_parallel(
    pool: &PgPool,
    spec: &TableSpec,
    generation: u32,
    connections: usize,
) -> Result<(), ProjectionError> {
    let table = spec.table(generation);
    let queue = std::sync::Mutex::new(
        spec.indexes
            .iter()
            .map(|cols| format!("CREATE INDEX ON {table} {cols}"))
            .collect::<Vec<_>>()
            .into_iter(),
    );
    let next = || queue.lock().ok().and_then(|mut q| q.next());
    let workers = (0..connections.clamp(1, spec.indexes.len().max(1))).map(|_| async {
        let built = async {
            let mut conn = pool.acquire().await?;
            while let Some(statement) = next() {
                let mut tx = conn.begin().await?;
                sqlx::query("SET LOCAL maintenance_work_mem = '256MB'")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&statement).persistent(false).execute(&mut *tx).await?;
                tx.commit().await?;
            }
            Ok::<_, ProjectionError>(())
        }
        .await;
        if built.is_err() {
            // The others stop after their current index.
            while next().is_some() {}
        }
        built
    });
    // Every worker runs to its end (the first error is reported after): one dropped
    // mid-statement could hand its pooled connection back inside a transaction.
    for result in futures::future::join_all(workers).await {
        result?;
    }
    sqlx::query(&format!("ANALYZE {table}"))
        .persistent(false)
        .execute(pool)
        .await?;
    Ok(())
}

/// Adds `columns` (nullable, whatever the spec says) to a generation's table and
/// re-creates the view on it, whose `*` was expanded when it was created.
pub async fn add_columns(
    conn: &mut PgConnection,
    spec: &TableSpec,
    generation: u32,
    columns: &[&(&str, &str)],
) -> Result<(), ProjectionError> {
    let table = spec.table(generation);
    let mut sql: Vec<String> = columns
        .iter()
        .map(|(name, ty)| {
            let ty = ty.trim_end_matches("NOT NULL").trim_end();
            format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {ty}")
        })
        .collect();
    sql.extend(spec.swap_sql(generation));
    execute_all(conn, sql).await
}

/// Adds a generation's missing per-minute activity table (empty) and points the views at
/// the generation again, so the live worker fills it from now on.
pub async fn add_minutes(conn: &mut PgConnection, spec: &TableSpec, generation: u32) -> Result<(), ProjectionError> {
    let mut sql = vec![spec.minutes_create_sql(generation)];
    sql.extend(spec.swap_sql(generation));
    execute_all(conn, sql).await
}

/// Points the views at a generation (run inside the swapping transaction).
pub async fn swap_views(conn: &mut PgConnection, spec: &TableSpec, generation: u32) -> Result<(), ProjectionError> {
    execute_all(conn, spec.swap_sql(generation)).await
}

/// Drops a generation's tables.
pub async fn drop_generation(
    conn: &mut PgConnection,
    spec: &TableSpec,
    generation: u32,
) -> Result<(), ProjectionError> {
    execute_all(conn, spec.drop_sql(generation)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: TableSpec = TableSpec {
        base: "things",
        key: "thing_id",
        columns: &[
            ("thing_id", "uuid NOT NULL"),
            ("state", "text NOT NULL"),
            ("doc", "json NOT NULL"),
        ],
        indexes: &["(state)"],
        counts: true,
        minutes: false,
        derived: &[],
    };

    #[test]
    fn statements_name_the_generation() {
        assert_eq!(SPEC.table(3), "read.things_g3");
        assert_eq!(
            SPEC.upsert_sql(2),
            "INSERT INTO read.things_g2 SELECT * FROM json_populate_recordset(NULL::read.things_g2, $1::json) \
             ON CONFLICT (thing_id) DO UPDATE SET state = EXCLUDED.state, doc = EXCLUDED.doc"
        );
        assert!(SPEC
            .swap_sql(4)
            .contains(&"CREATE VIEW read.things AS SELECT * FROM read.things_g4".to_owned()));
        assert!(SPEC.create_sql(1).iter().any(|s| s.contains("read.things_counts_g1")));
    }

    #[test]
    fn derived_columns_are_created_but_not_upserted() {
        let spec = TableSpec {
            derived: &[("extra", "text")],
            ..SPEC
        };
        assert!(spec
            .create_sql(1)
            .iter()
            .any(|s| s.contains("doc json NOT NULL, extra text")));
        assert_eq!(
            spec.upsert_sql(2),
            SPEC.upsert_sql(2),
            "an upsert leaves them as they are"
        );
        assert_ne!(spec.layout(), SPEC.layout());
        assert_eq!(spec.all_columns().count(), 4);
    }

    #[test]
    fn the_layout_changes_with_a_column_type_an_index_or_a_side_table_only() {
        assert_eq!(SPEC.layout(), SPEC.layout());
        assert_eq!(SPEC.layout().len(), 16);
        let retyped = TableSpec {
            columns: &[
                ("thing_id", "uuid NOT NULL"),
                ("state", "text"),
                ("doc", "json NOT NULL"),
            ],
            ..SPEC
        };
        let reindexed = TableSpec {
            indexes: &["(state, thing_id)"],
            ..SPEC
        };
        let without_counts = TableSpec { counts: false, ..SPEC };
        let renamed_view = TableSpec { base: "stuff", ..SPEC };
        let with_derived = TableSpec {
            derived: &[("extra", "text")],
            ..SPEC
        };
        for changed in [&retyped, &reindexed, &without_counts, &with_derived] {
            assert_ne!(changed.layout(), SPEC.layout(), "{changed:?}");
        }
        assert_eq!(
            renamed_view.layout(),
            SPEC.layout(),
            "the base name is not part of the layout"
        );
    }
}
