//! The columns of `read.pipelines` that come from other projections: a pipeline's latest
//! run (`last_run_*`) and the specs of its active schedules (`schedule_specs`), which
//! every `pipeline.get` and `pipeline.list` shows. Kept on the pipeline's row, a page of
//! pipelines is one index scan instead of two probes per row into `read.runs` and
//! `read.schedules`.
//!
//! They are never folded from events: they are recomputed from the runs and schedules
//! rows, with the statement a query would run, for the pipelines a batch touched
//! ([`refresh`], inside the worker's transaction that applied the batch) or for all of
//! them ([`refresh_all`]: in a pipelines rebuild's swap, after a runs or schedules
//! rebuild, after a batch applied while a rebuild held the pipelines model, and when a
//! replica starts to lead). A recomputation writes only rows whose values differ, and the derived
//! columns are not indexed, so those updates can be HOT.

use flexcore_contracts::events::{PipelineEvent, RunEvent, ScheduleEvent};
use flexcore_contracts::views::PipelineView;
use flexcore_eventstore::RecordedEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::projection::{Entity as _, Kind};

/// What a batch changed that pipeline rows show.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// Pipelines created (a new row, whose derived columns start null).
    pub pipelines: Vec<Uuid>,
    /// Runs requested or changed.
    pub runs: Vec<Uuid>,
    /// Schedules created or changed.
    pub schedules: Vec<Uuid>,
}

impl Touched {
    /// Adds what `kind`'s events (those applied to it) change.
    pub fn add(&mut self, kind: Kind, events: &[&RecordedEvent]) {
        let (ids, aggregate, created_only) = match kind {
            Kind::Pipelines => (&mut self.pipelines, PipelineEvent::AGGREGATE_TYPE, true),
            Kind::Runs => (&mut self.runs, RunEvent::AGGREGATE_TYPE, false),
            Kind::Schedules => (&mut self.schedules, ScheduleEvent::AGGREGATE_TYPE, false),
            Kind::Plugins | Kind::Audit => return,
        };
        ids.extend(
            events
                .iter()
                .filter(|e| e.aggregate_type == aggregate && (!created_only || e.version == 1))
                .map(|e| e.aggregate_id),
        );
        ids.sort_unstable();
        ids.dedup();
    }

    /// Whether nothing was touched.
    pub fn is_empty(&self) -> bool {
        self.pipelines.is_empty() && self.runs.is_empty() && self.schedules.is_empty()
    }
}

/// The `UPDATE` of generation table `table`'s derived columns for the pipelines that
/// `selection` (a query of one `pipeline_id` column) names, from the served runs and
/// schedules views; a row whose values are already right is not written.
fn update_sql(table: &str, selection: &str) -> String {
    format!(
        "WITH a AS ({selection}) \
         UPDATE {table} p SET last_run_id = l.run_id, last_run_state = l.state, \
           last_run_requested_at = l.requested_at, last_run_finished_at = l.finished_at, \
           schedule_specs = s.specs \
         FROM a \
         LEFT JOIN LATERAL (SELECT r.run_id, r.state, r.requested_at, r.finished_at FROM read.runs r \
           WHERE r.pipeline_id = a.pipeline_id ORDER BY r.requested_at DESC, r.run_id DESC LIMIT 1) l ON true \
         LEFT JOIN LATERAL (SELECT json_agg(sc.doc->'spec' ORDER BY sc.schedule_id)::text AS specs \
           FROM read.schedules sc WHERE sc.pipeline_id = a.pipeline_id AND sc.state = 'active') s ON true \
         WHERE p.pipeline_id = a.pipeline_id \
           AND (p.last_run_id, p.last_run_state, p.last_run_requested_at, p.last_run_finished_at, p.schedule_specs) \
               IS DISTINCT FROM (l.run_id, l.state, l.requested_at, l.finished_at, s.specs)"
    )
}

fn pipelines_table(generation: u32) -> String {
    PipelineView::SPEC.table(generation)
}

/// Recomputes the derived columns of the pipelines `touched` names (created, or owning a
/// touched run or schedule) in pipelines generation `generation`; returns the rows
/// written.
pub async fn refresh(conn: &mut PgConnection, generation: u32, touched: &Touched) -> Result<u64, ProjectionError> {
    if touched.is_empty() {
        return Ok(0);
    }
    let sql = update_sql(
        &pipelines_table(generation),
        "SELECT unnest($1::uuid[]) AS pipeline_id \
         UNION SELECT pipeline_id FROM read.runs WHERE run_id = ANY($2::uuid[]) \
         UNION SELECT pipeline_id FROM read.schedules WHERE schedule_id = ANY($3::uuid[])",
    );
    Ok(sqlx::query(&sql)
        .bind(&touched.pipelines)
        .bind(&touched.runs)
        .bind(&touched.schedules)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

/// Recomputes the derived columns of every pipeline in generation `generation`; returns
/// the rows written.
pub async fn refresh_all(conn: &mut PgConnection, generation: u32) -> Result<u64, ProjectionError> {
    let table = pipelines_table(generation);
    let sql = update_sql(&table, &format!("SELECT pipeline_id FROM {table}"));
    Ok(sqlx::query(&sql)
        .persistent(false)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(aggregate_type: &str, id: u128, version: u64) -> RecordedEvent {
        RecordedEvent {
            global_position: 1,
            transaction_id: 1,
            event_id: Uuid::nil(),
            aggregate_type: aggregate_type.into(),
            aggregate_id: Uuid::from_u128(id),
            version,
            event_type: format!("{aggregate_type}.x"),
            schema_version: 1,
            data: flexcore_contracts::OpaqueJson::null(),
            metadata: Default::default(),
            recorded_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_batch_touches_created_pipelines_and_every_run_and_schedule_once() {
        let events = [
            event("pipeline", 1, 1),
            event("pipeline", 2, 5),
            event("run", 3, 1),
            event("run", 3, 2),
            event("run", 4, 7),
            event("schedule", 5, 3),
            event("plugin", 6, 1),
        ];
        let refs: Vec<&RecordedEvent> = events.iter().collect();
        let mut touched = Touched::default();
        assert!(touched.is_empty());
        for kind in Kind::ALL {
            touched.add(kind, &refs);
        }
        assert_eq!(
            touched,
            Touched {
                pipelines: vec![Uuid::from_u128(1)],
                runs: vec![Uuid::from_u128(3), Uuid::from_u128(4)],
                schedules: vec![Uuid::from_u128(5)],
            }
        );
        // Only the events applied to a projection count for it.
        let mut runs_only = Touched::default();
        runs_only.add(Kind::Runs, &refs[..1]);
        assert!(runs_only.is_empty());
    }

    #[test]
    fn the_update_names_its_table_and_skips_rows_already_right() {
        let sql = update_sql("read.pipelines_g7", "SELECT pipeline_id FROM x");
        assert!(sql.contains("UPDATE read.pipelines_g7 p SET"));
        assert!(sql.contains("IS DISTINCT FROM"));
        // The contract's name of an active schedule, written as a literal.
        assert_eq!(flexcore_contracts::lifecycle::ScheduleStatus::Active.as_str(), "active");
        assert!(sql.contains("sc.state = 'active'"));
    }
}
