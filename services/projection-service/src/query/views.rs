//! Handlers of the entity views, statistics and projection administration.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use flexcore_contracts::lifecycle::{PipelineStatus, RunStatus};
use flexcore_contracts::model::ScheduleSpec;
use flexcore_contracts::queries::ListQuery;
use flexcore_contracts::views::{
    PluginStatsView, ProjectionStatus, RebuildStatus, RunStateStats, RunSummary, StatsView,
};
use flexcore_contracts::{ErrorBody, ErrorReason};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::db_error;
use super::list::{self, Item, ListSpec, Page};
use crate::positions::checkpoint;
use crate::projection::Kind;
use crate::store;

/// An entity view addressed by a query subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `plugin.*`
    Plugin = 0,
    /// `pipeline.*`
    Pipeline = 1,
    /// `run.*`
    Run = 2,
    /// `schedule.*`
    Schedule = 3,
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
    extra: "",
};

/// A pipeline's state, latest run and active schedules' specs, from its own row
/// (`crate::derived`); the specs are not read for a pipeline that is not active (it has
/// no next fire).
const PIPELINES: ListSpec = ListSpec {
    name: "pipelines",
    view: "read.pipelines",
    key: ("pipeline_id", "uuid"),
    time: ("created_at", "timestamptz"),
    updated: Some("updated_at"),
    name_column: Some("name"),
    window: "created_at",
    extra: ", v.state AS x_state, v.last_run_id AS x_run_id, v.last_run_state AS x_run_state, \
            v.last_run_requested_at AS x_requested_at, v.last_run_finished_at AS x_finished_at, \
            CASE WHEN v.state = 'active' THEN v.schedule_specs END AS x_schedules",
};

const RUNS: ListSpec = ListSpec {
    name: "runs",
    view: "read.runs",
    key: ("run_id", "uuid"),
    time: ("requested_at", "timestamptz"),
    updated: Some("updated_at"),
    name_column: None,
    window: "requested_at",
    extra: "",
};

/// A schedule's spec when it is active (for its next fire) and its pipeline's name.
const SCHEDULES: ListSpec = ListSpec {
    name: "schedules",
    view: "read.schedules",
    key: ("schedule_id", "uuid"),
    time: ("created_at", "timestamptz"),
    updated: Some("updated_at"),
    name_column: None,
    window: "created_at",
    extra: ", CASE WHEN v.state = 'active' THEN (v.doc->'spec')::text END AS x_spec, \
            (SELECT p.name FROM read.pipelines p WHERE p.pipeline_id = v.pipeline_id) AS x_pipeline_name",
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
    extra: "",
};

/// What a row adds to its document at query time, from its extra columns.
#[derive(Debug, Default)]
pub struct Extra {
    /// A pipeline's latest run.
    last_run: Option<RunSummary>,
    /// The schedule specs whose next fire a pipeline (its active schedules, when it is
    /// active) or a schedule (when active) shows.
    specs: Vec<ScheduleSpec>,
    /// A schedule's pipeline's name.
    pipeline_name: Option<String>,
}

impl Target {
    /// Decodes a row's extra columns (those of the target's [`ListSpec::extra`]).
    fn extra(self, row: &PgRow) -> Result<Extra, ErrorBody> {
        let get = |name: &str| row.try_get::<Option<&str>, _>(name).map_err(db_error);
        match self {
            Self::Plugin | Self::Run => Ok(Extra::default()),
            Self::Pipeline => {
                let run_id: Option<Uuid> = row.try_get("x_run_id").map_err(db_error)?;
                let last_run = match run_id {
                    Some(run_id) => Some(RunSummary {
                        run_id,
                        state: row.try_get("x_run_state").map_err(db_error)?,
                        requested_at: row.try_get("x_requested_at").map_err(db_error)?,
                        finished_at: row.try_get("x_finished_at").map_err(db_error)?,
                    }),
                    None => None,
                };
                // A paused or archived pipeline has no next fire: its specs are not read.
                let active = get("x_state")? == Some(PipelineStatus::Active.as_str());
                let specs = match get("x_schedules")? {
                    Some(specs) if active => serde_json::from_str(specs).unwrap_or_default(),
                    _ => Vec::new(),
                };
                Ok(Extra {
                    last_run,
                    specs,
                    pipeline_name: None,
                })
            }
            Self::Schedule => Ok(Extra {
                last_run: None,
                specs: get("x_spec")?
                    .and_then(|spec| serde_json::from_str(spec).ok())
                    .into_iter()
                    .collect(),
                pipeline_name: get("x_pipeline_name")?.map(str::to_owned),
            }),
        }
    }
}

/// `<view>.get` of every id in `ids` (one statement: a pipeline's last run and schedules
/// come with it; prepared once per connection, its text being the same for any ids): the
/// documents found, by id.
pub async fn get_many(pool: &PgPool, target: Target, ids: &[Uuid]) -> Result<HashMap<Uuid, String>, ErrorBody> {
    static SQL: OnceLock<[String; 4]> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        [Target::Plugin, Target::Pipeline, Target::Run, Target::Schedule].map(|target| {
            let spec = target.spec();
            let key = spec.key.0;
            format!(
                "{} WHERE v.{key} = ANY($1)",
                spec.select(&format!(", v.{key} AS x_key"))
            )
        })
    });
    let rows = sqlx::query(&sql[target as usize])
        .bind(ids)
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
    let now = Utc::now();
    let mut docs = HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: Uuid = row.try_get("x_key").map_err(db_error)?;
        let extra = target.extra(row)?;
        let next = next_fire_of(&extra, now);
        docs.insert(id, enrich(list::doc(row)?, &extra, next));
    }
    Ok(docs)
}

/// The refusal of a `<view>.get` whose id is not in the view.
pub fn not_found(target: Target, id: Uuid) -> ErrorBody {
    let spec = target.spec();
    let what = spec.name.trim_end_matches('s');
    ErrorBody::at(
        ErrorReason::NotFound,
        "/id",
        format!(
            "no {what} with id {id}; list them: `flexctl {what} list` or GET /api/v1/flexcore/{}",
            spec.name
        ),
    )
}

/// `<view>.list`, and the first next fire it shows (when the page goes out of date).
pub async fn list(pool: &PgPool, target: Target, q: &ListQuery) -> Result<(Page, Option<DateTime<Utc>>), ErrorBody> {
    let page = list::page(pool, target.spec(), q, |row| target.extra(row)).await?;
    let now = Utc::now();
    let mut first_fire: Option<DateTime<Utc>> = None;
    let items = page
        .items
        .into_iter()
        .map(|item| {
            let next = next_fire_of(&item.extra, now);
            if let Some(next) = next {
                first_fire = Some(first_fire.map_or(next, |first| first.min(next)));
            }
            Item {
                doc: enrich(item.doc, &item.extra, next),
                extra: (),
                cursor: item.cursor,
            }
        })
        .collect();
    Ok((Page { items, more: page.more }, first_fire))
}

/// The first next fire among an item's active schedules.
fn next_fire_of(extra: &Extra, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    extra.specs.iter().filter_map(|s| next_fire(s, now)).min()
}

/// Adds what is computed at query time: a pipeline's last run and next fire (from its
/// active schedules), a schedule's next fire and pipeline name. The stored document's
/// text is kept as it is; the fields are appended to it.
fn enrich(doc: String, extra: &Extra, next: Option<DateTime<Utc>>) -> String {
    if extra.last_run.is_none() && next.is_none() && extra.pipeline_name.is_none() {
        return doc;
    }
    let text = doc.trim_end();
    let Some(body) = text.strip_suffix('}') else { return doc };
    let mut out = String::with_capacity(doc.len() + 200);
    out.push_str(body);
    let mut empty = body.trim_end().ends_with('{');
    let mut field = |name: &str, value: Result<String, serde_json::Error>| {
        // Values built here always encode; one that did not would be left out.
        let Ok(value) = value else { return };
        if !empty {
            out.push(',');
        }
        empty = false;
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
        out.push_str(&value);
    };
    if let Some(run) = &extra.last_run {
        field("last_run", serde_json::to_string(run));
    }
    if let Some(next) = next {
        field("next_fire", serde_json::to_string(&next));
    }
    if let Some(name) = &extra.pipeline_name {
        field("pipeline_name", serde_json::to_string(name));
    }
    out.push('}');
    out
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
    use flexcore_contracts::lifecycle::ScheduleStatus;
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
    fn the_state_the_sql_names_active_is_the_contract_s() {
        // PIPELINES and SCHEDULES write it as a literal (and `crate::derived` too).
        assert_eq!(ScheduleStatus::Active.as_str(), "active");
        assert_eq!(PipelineStatus::Active.as_str(), "active");
        assert!(PIPELINES.extra.contains("WHEN v.state = 'active'"));
        assert!(SCHEDULES.extra.contains("v.state = 'active'"));
    }

    #[test]
    fn fields_are_appended_to_the_stored_text_as_it_is() {
        let now: DateTime<Utc> = "2026-11-24T10:15:00Z".parse().unwrap();
        let run = RunSummary {
            run_id: Uuid::from_u128(7),
            state: "succeeded".into(),
            requested_at: "2026-11-24T10:00:00.5Z".parse().unwrap(),
            finished_at: None,
        };
        let extra = Extra {
            last_run: Some(run.clone()),
            specs: vec![spec("0 12 * * *", "UTC")],
            pipeline_name: Some("n\"1".into()),
        };
        let doc = r#"{"b": 1.50, "a":"x" } "#.to_owned();
        let next = next_fire_of(&extra, now);
        assert_eq!(next, Some("2026-11-24T12:00:00Z".parse().unwrap()));
        let out = enrich(doc, &extra, next);
        assert_eq!(
            out,
            format!(
                r#"{{"b": 1.50, "a":"x" ,"last_run":{},"next_fire":"2026-11-24T12:00:00Z","pipeline_name":"n\"1"}}"#,
                serde_json::to_string(&run).unwrap()
            )
        );
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["last_run"]["requested_at"], "2026-11-24T10:00:00.500Z");
        // Nothing to add, or not an object: unchanged.
        assert_eq!(enrich("{}".into(), &Extra::default(), None), "{}");
        assert_eq!(enrich("[]".into(), &extra, next), "[]");
        let only = Extra {
            pipeline_name: Some("p".into()),
            ..Extra::default()
        };
        assert_eq!(enrich("{ }".into(), &only, None), r#"{ "pipeline_name":"p"}"#);
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
