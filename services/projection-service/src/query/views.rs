//! Handlers of the entity views, statistics and projection administration.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use flexcore_contracts::lifecycle::{PipelineStatus, RunStatus, ScheduleStatus};
use flexcore_contracts::model::ScheduleSpec;
use flexcore_contracts::queries::ListQuery;
use flexcore_contracts::views::{
    PluginStatsView, ProjectionStatus, RebuildStatus, RunStateStats, RunSummary, ScheduleView, StatsView,
};
use flexcore_contracts::{ErrorBody, ErrorReason, OpaqueJson};
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

use super::db_error;
use super::list::{self, ListSpec, Page};
use crate::positions::checkpoint;
use crate::projection::Kind;
use crate::store;

/// An entity view addressed by a query subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `plugin.*`
    Plugin,
    /// `pipeline.*`
    Pipeline,
    /// `run.*`
    Run,
    /// `schedule.*`
    Schedule,
}

impl Target {
    /// The target of a subject's view token.
    pub fn parse(view: &str) -> Option<Self> {
        match view {
            "plugin" => Some(Self::Plugin),
            "pipeline" => Some(Self::Pipeline),
            "run" => Some(Self::Run),
            "schedule" => Some(Self::Schedule),
            _ => None,
        }
    }

    /// The projection that owns it.
    pub fn kind(self) -> Kind {
        match self {
            Self::Plugin => Kind::Plugins,
            Self::Pipeline => Kind::Pipelines,
            Self::Run => Kind::Runs,
            Self::Schedule => Kind::Schedules,
        }
    }

    /// Every projection its answers read (pipelines show their last run and next fire).
    pub fn reads(self) -> &'static [Kind] {
        match self {
            Self::Plugin => &[Kind::Plugins],
            Self::Pipeline => &[Kind::Pipelines, Kind::Runs, Kind::Schedules],
            Self::Run => &[Kind::Runs],
            Self::Schedule => &[Kind::Schedules],
        }
    }

    fn spec(self) -> &'static ListSpec {
        match self {
            Self::Plugin => &PLUGINS,
            Self::Pipeline => &PIPELINES,
            Self::Run => &RUNS,
            Self::Schedule => &SCHEDULES,
        }
    }
}

const PLUGINS: ListSpec = ListSpec {
    name: "plugins",
    view: "read.plugins",
    key: ("plugin_id", "uuid"),
    time: ("created_at", "timestamptz"),
    updated: Some("updated_at"),
    name_column: Some("name"),
    window: "created_at",
    extra: &[],
};

const PIPELINES: ListSpec = ListSpec {
    name: "pipelines",
    view: "read.pipelines",
    key: ("pipeline_id", "uuid"),
    time: ("created_at", "timestamptz"),
    updated: Some("updated_at"),
    name_column: Some("name"),
    window: "created_at",
    extra: &[
        (
            "(SELECT jsonb_build_object('run_id', r.run_id, 'state', r.state, 'requested_at', r.requested_at, \
               'finished_at', r.finished_at) FROM read.runs r WHERE r.pipeline_id = v.pipeline_id \
               ORDER BY r.requested_at DESC, r.run_id DESC LIMIT 1)",
            "x_last_run",
        ),
        (
            "(SELECT json_agg(s.doc->'spec') FROM read.schedules s \
               WHERE s.pipeline_id = v.pipeline_id AND s.state = 'active')",
            "x_schedules",
        ),
    ],
};

const RUNS: ListSpec = ListSpec {
    name: "runs",
    view: "read.runs",
    key: ("run_id", "uuid"),
    time: ("requested_at", "timestamptz"),
    updated: Some("updated_at"),
    name_column: None,
    window: "requested_at",
    extra: &[],
};

const SCHEDULES: ListSpec = ListSpec {
    name: "schedules",
    view: "read.schedules",
    key: ("schedule_id", "uuid"),
    time: ("created_at", "timestamptz"),
    updated: Some("updated_at"),
    name_column: None,
    window: "created_at",
    extra: &[(
        "(SELECT to_jsonb(p.name) FROM read.pipelines p WHERE p.pipeline_id = v.pipeline_id)",
        "x_pipeline_name",
    )],
};

/// The audit log.
pub const EVENTS: ListSpec = ListSpec {
    name: "events",
    view: "read.events",
    key: ("global_position", "bigint"),
    time: ("global_position", "bigint"),
    updated: None,
    name_column: None,
    window: "recorded_at",
    extra: &[],
};

/// `<view>.get`: one statement (a pipeline's last run and schedules come with it).
pub async fn get(pool: &PgPool, target: Target, id: Uuid) -> Result<OpaqueJson, ErrorBody> {
    let spec = target.spec();
    let row = sqlx::query(&format!(
        "SELECT doc{} FROM {} AS v WHERE {} = $1",
        spec.extra_sql(),
        spec.view,
        spec.key.0
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(db_error)?;
    let Some(row) = row else {
        let what = spec.name.trim_end_matches('s');
        return Err(ErrorBody::at(
            ErrorReason::NotFound,
            "/id",
            format!(
                "no {what} with id {id}; list them: `flexctl {what} list` or GET /api/v1/flexcore/{}",
                spec.name
            ),
        ));
    };
    let (doc, extra) = spec.doc(&row)?;
    Ok(enrich(target, doc, &extra, Utc::now()))
}

/// `<view>.list`.
pub async fn list(pool: &PgPool, target: Target, q: &ListQuery) -> Result<Page, ErrorBody> {
    let mut page = list::page(pool, target.spec(), q).await?;
    let now = Utc::now();
    for item in &mut page.items {
        item.doc = enrich(target, std::mem::take(&mut item.doc), &item.extra, now);
    }
    Ok(page)
}

/// Adds what is computed at query time: a pipeline's last run (from its `x_last_run`
/// column) and next fire (from its active schedules, `x_schedules`), a schedule's next fire.
/// The stored document's text is kept as it is; the fields are appended to it.
fn enrich(
    target: Target,
    doc: OpaqueJson,
    extra: &serde_json::Map<String, serde_json::Value>,
    now: DateTime<Utc>,
) -> OpaqueJson {
    let mut added: Vec<(&str, serde_json::Value)> = Vec::new();
    match target {
        Target::Schedule => {
            let view: Option<ScheduleView> = doc.decode().ok();
            if let Some(next) = view.and_then(|v| {
                (v.state == ScheduleStatus::Active.as_str())
                    .then(|| next_fire(&v.spec, now))
                    .flatten()
            }) {
                added.push(("next_fire", serde_json::json!(next)));
            }
            if let Some(name) = extra.get("x_pipeline_name").filter(|n| n.is_string()) {
                added.push(("pipeline_name", name.clone()));
            }
        }
        Target::Pipeline => {
            #[derive(serde::Deserialize)]
            struct State {
                state: String,
            }
            let active = doc
                .decode::<State>()
                .is_ok_and(|s| s.state == PipelineStatus::Active.as_str());
            let last_run = extra
                .get("x_last_run")
                .and_then(|r| serde_json::from_value::<RunSummary>(r.clone()).ok());
            let schedules = extra
                .get("x_schedules")
                .and_then(|s| serde_json::from_value::<Vec<ScheduleSpec>>(s.clone()).ok())
                .unwrap_or_default();
            let next = schedules
                .iter()
                .filter_map(|s| next_fire(s, now))
                .min()
                .filter(|_| active);
            if let Some(run) = last_run.and_then(|r| serde_json::to_value(r).ok()) {
                added.push(("last_run", run));
            }
            if let Some(next) = next {
                added.push(("next_fire", serde_json::json!(next)));
            }
        }
        Target::Plugin | Target::Run => {}
    }
    with_fields(doc, &added)
}

/// `doc` (an object's text) with `fields` appended.
fn with_fields(doc: OpaqueJson, fields: &[(&str, serde_json::Value)]) -> OpaqueJson {
    if fields.is_empty() {
        return doc;
    }
    let text = doc.as_str().trim_end();
    let Some(body) = text.strip_suffix('}') else { return doc };
    let mut out = body.to_owned();
    let mut empty = body.trim_end().ends_with('{');
    for (name, value) in fields {
        if !empty {
            out.push(',');
        }
        empty = false;
        out.push_str(&serde_json::Value::from(*name).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    }
    out.push('}');
    OpaqueJson::parse(&out).unwrap_or(doc)
}

/// The first slot of `spec` after `now` within its bounds (the scheduler's rule: 5 or 6
/// fields, evaluated in the schedule's IANA zone).
pub fn next_fire(spec: &ScheduleSpec, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    flexcore_cron::Calendar::new(spec).ok()?.next_after(now)
}

/// Next fires in `stats.get`.
const NEXT_FIRES: usize = 5;

/// `stats.get`.
pub async fn stats(pool: &PgPool, upcoming: &super::upcoming::Upcoming) -> Result<StatsView, ErrorBody> {
    let counts = |view: &'static str| async move {
        let rows: Vec<(String, i64)> = sqlx::query_as(&format!("SELECT state, count FROM {view} WHERE count <> 0"))
            .fetch_all(pool)
            .await
            .map_err(db_error)?;
        Ok::<BTreeMap<String, u64>, ErrorBody>(
            rows.into_iter()
                .map(|(s, c)| (s, u64::try_from(c).unwrap_or_default()))
                .collect(),
        )
    };
    // From the per-minute activity table (at most 1,441 rows), to the minute: the minute
    // an hour or a day ago counts whole. Counting the runs themselves would read every run
    // of the last day.
    let (hour, day, finished, failed): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT \
           coalesce(sum(requested) FILTER (WHERE minute >= date_trunc('minute', now() - interval '1 hour')), 0)::bigint, \
           coalesce(sum(requested), 0)::bigint, coalesce(sum(finished), 0)::bigint, coalesce(sum(failed), 0)::bigint \
         FROM read.runs_minutes WHERE minute >= date_trunc('minute', now() - interval '1 day')",
    )
    .fetch_one(pool)
    .await
    .map_err(db_error)?;
    let u = |v: i64| u64::try_from(v).unwrap_or_default();
    Ok(StatsView {
        plugins: counts("read.plugins_counts").await?,
        pipelines: counts("read.pipelines_counts").await?,
        runs: counts("read.runs_counts").await?,
        schedules: counts("read.schedules_counts").await?,
        runs_last_hour: u(hour),
        runs_last_day: u(day),
        finished_last_day: u(finished),
        failed_last_day: u(failed),
        failure_rate_last_day: if finished > 0 {
            failed as f64 / finished as f64
        } else {
            0.0
        },
        next_fires: upcoming.next(pool, Utc::now(), NEXT_FIRES).await?,
    })
}

/// `plugin.stats`: the runs whose pinned definitions use plugin `id`, by state, with their
/// average durations (one index scan of the runs' `plugin_ids`).
pub async fn plugin_stats(pool: &PgPool, id: Uuid) -> Result<PluginStatsView, ErrorBody> {
    let plugin: Option<(String, String, String)> =
        sqlx::query_as("SELECT name, version, state FROM read.plugins WHERE plugin_id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(db_error)?;
    let Some((name, version, state)) = plugin else {
        return Err(ErrorBody::at(
            ErrorReason::NotFound,
            "/id",
            format!("no plugin with id {id}; list them: `flexctl plugin list` or GET /api/v1/flexcore/plugins"),
        ));
    };
    /// A run state's count, average duration (finished states) and last request.
    type StateRow = (String, i64, Option<f64>, Option<DateTime<Utc>>);
    let rows: Vec<StateRow> = sqlx::query_as(
        "SELECT state, count(*), \
           avg(extract(epoch FROM finished_at - requested_at) * 1000)::float8, max(requested_at) \
         FROM read.runs WHERE plugin_ids @> ARRAY[$1]::uuid[] GROUP BY state",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    let ms = |avg: f64| avg.max(0.0).round() as u64;
    let (mut finished, mut failed, mut finished_ms) = (0_u64, 0_u64, 0.0_f64);
    let mut runs = BTreeMap::new();
    for (run_state, count, avg, _) in &rows {
        let count = u64::try_from(*count).unwrap_or_default();
        if let Some(avg) = avg {
            finished += count;
            finished_ms += avg * count as f64;
            if run_state.parse::<RunStatus>().is_ok_and(RunStatus::is_failure) {
                failed += count;
            }
        }
        runs.insert(
            run_state.clone(),
            RunStateStats {
                count,
                average_duration_ms: avg.map(ms),
            },
        );
    }
    Ok(PluginStatsView {
        plugin_id: id,
        name,
        version,
        state,
        runs_total: runs.values().map(|r| r.count).sum(),
        runs,
        average_duration_ms: (finished > 0).then(|| ms(finished_ms / finished as f64)),
        failure_rate: if finished > 0 {
            failed as f64 / finished as f64
        } else {
            0.0
        },
        last_requested_at: rows.iter().filter_map(|r| r.3).max(),
    })
}

/// `projection.list`: position, lag and rebuild progress of every projection (the
/// checkpoints from the read models' database `pool`, the lag from the event store `log`).
pub async fn projections(pool: &PgPool, log: &PgPool) -> Result<Vec<ProjectionStatus>, ErrorBody> {
    type Row = (String, i32, i64, i64, i64, DateTime<Utc>, Option<Json<RebuildStatus>>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT name, generation, transaction_id::text::bigint, global_position, events_applied, updated_at, rebuild \
         FROM read.projections ORDER BY name",
    )
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for (name, generation, tx, pos, applied, updated_at, rebuild) in rows {
        let cp = checkpoint(tx, pos);
        let (lag_events, lag_ms): (i64, Option<f64>) = sqlx::query_as(
            "SELECT \
               (SELECT count(*) FROM (SELECT 1 FROM events \
                  WHERE (transaction_id, global_position) > ($1::text::xid8, $2) LIMIT 1000000) s), \
               (SELECT extract(epoch FROM now() - recorded_at) * 1000 FROM events \
                  WHERE (transaction_id, global_position) > ($1::text::xid8, $2) \
                  ORDER BY transaction_id, global_position LIMIT 1)::float8",
        )
        .bind(cp.transaction_id.to_string())
        .bind(pos)
        .fetch_one(log)
        .await
        .map_err(db_error)?;
        out.push(ProjectionStatus {
            name,
            generation: u32::try_from(generation).unwrap_or_default(),
            position: cp.global_position,
            lag_events: u64::try_from(lag_events).unwrap_or_default(),
            lag_ms: lag_ms.map_or(0, |ms| ms.max(0.0) as u64),
            events_applied: u64::try_from(applied).unwrap_or_default(),
            updated_at,
            rebuild: rebuild.map(|r| r.0),
        });
    }
    Ok(out)
}

/// `projection.rebuild`.
pub async fn request_rebuild(pool: &PgPool, kind: Kind) -> Result<RebuildStatus, ErrorBody> {
    match store::request_rebuild(pool, kind).await {
        Ok(Some(status)) => Ok(status),
        Ok(None) => Err(ErrorBody::new(
            ErrorReason::RebuildRunning,
            format!(
                "a rebuild of {} is already requested or running; follow it: `flexctl projection list` \
                 or GET /api/v1/flexcore/status",
                kind.name()
            ),
        )),
        Err(crate::error::ProjectionError::Database(e)) => Err(db_error(e)),
        Err(other) => Err(ErrorBody::new(ErrorReason::Internal, other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flexcore_contracts::model::OverlapPolicy;

    fn spec(cron: &str, tz: &str) -> ScheduleSpec {
        ScheduleSpec {
            cron: cron.into(),
            timezone: tz.into(),
            overlap: OverlapPolicy::default(),
            catchup_window_seconds: 0,
            catchup_cap: 0,
            jitter_seconds: 0,
            start_at: None,
            end_at: None,
        }
    }

    #[test]
    fn next_fire_honours_zone_and_bounds() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T10:15:00Z").map(|t| t.with_timezone(&Utc));
        let now = now.unwrap_or_default();
        // 12:00 in Berlin (UTC+1 in November) is 11:00 UTC.
        let next = next_fire(&spec("0 12 * * *", "Europe/Berlin"), now);
        assert_eq!(
            next.map(|t| t.to_rfc3339()),
            Some("2026-11-24T11:00:00+00:00".to_owned())
        );
        let mut ended = spec("0 12 * * *", "Europe/Berlin");
        ended.end_at = Some(now);
        assert_eq!(next_fire(&ended, now), None);
        assert_eq!(next_fire(&spec("not cron", "UTC"), now), None);
    }
}
