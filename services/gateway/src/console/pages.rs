//! The console's pages: each one or two queries, rendered on the server.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use flexcore_security::ApiRole;
use serde::Deserialize;
use serde_json::{json, Value};

use super::html::{self, action_button, badge, esc, field, table, time};
use crate::api::{parse_id, queries, Collection};
use crate::{Caller, Gateway};

/// Items on a list page.
const PAGE: u32 = 50;
/// Log lines on a run's page.
const RUN_LOG_LINES: usize = 200;

/// A page saying what went wrong.
pub fn error_page(caller: &Caller, status: StatusCode, detail: &str) -> Response {
    let body = format!(
        "<p class=\"error\" role=\"alert\">{}</p><p><a href=\"/\">Overview</a></p>",
        esc(detail)
    );
    let mut response = html::page(
        status.canonical_reason().unwrap_or("Error"),
        Some(&caller.principal),
        &body,
    );
    *response.status_mut() = status;
    response
}

/// A query's `data` (and `next_cursor`), or the error page.
async fn data(
    gateway: &Gateway,
    caller: &Caller,
    query: &str,
    body: &Value,
) -> Result<(Value, Option<String>), Response> {
    match queries::ask(gateway, query, body).await {
        Ok(ok) => Ok((
            serde_json::from_str(ok.data.as_str()).unwrap_or(Value::Null),
            ok.next_cursor,
        )),
        Err(problem) => Err(error_page(
            caller,
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_GATEWAY),
            &problem.detail,
        )),
    }
}

/// `GET /`: services, projections, the queue, runners, runs by state.
pub async fn overview(State(gateway): State<Arc<Gateway>>, Extension(caller): Extension<Caller>) -> Response {
    let status = crate::api::status::snapshot(&gateway).await;
    let up = |v: &Value| {
        if v["up"] == json!(true) {
            badge("up")
        } else {
            badge("down")
        }
    };
    // The script refetches this page and swaps the `data-overview` part in: soon after a run
    // event, and every few seconds for what has no event (services, queue, lag).
    let mut body = String::from(
        "<div data-overview data-events=\"/api/v1/flexcore/events/stream?aggregate_type=run\">\
         <section aria-labelledby=\"services\"><h2 id=\"services\">Services</h2>",
    );
    let runners: Vec<&Value> = status["runners"]
        .as_array()
        .map(|r| r.iter().collect())
        .unwrap_or_default();
    let slots: u64 = runners.iter().filter_map(|r| r["slots"].as_u64()).sum();
    let busy: u64 = runners.iter().filter_map(|r| r["busy"].as_u64()).sum();
    // Each service's version as it names itself (`flexcore-command/0.1.0`), or the versions
    // its replicas name.
    let version_of = |v: &Value| {
        v["version"]
            .as_str()
            .map(|v| v.rsplit('/').next().unwrap_or(v).to_owned())
    };
    let versions = |replicas: &Value| {
        let mut all: Vec<String> = replicas
            .as_array()
            .map(|r| r.iter().filter_map(version_of).collect())
            .unwrap_or_default();
        all.sort();
        all.dedup();
        match all.as_slice() {
            [] => String::new(),
            [one] => format!("version {}", esc(one)),
            many => format!("versions {}", esc(&many.join(", "))),
        }
    };
    let probed = |v: &Value| {
        version_of(v)
            .map(|v| format!("version {}", esc(&v)))
            .unwrap_or_default()
    };
    let with = |a: String, b: String| {
        [a, b]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    };
    body.push_str(&table(
        "Services and their state",
        &["Service", "State", "Detail"],
        &[
            vec![
                "gateway".into(),
                badge("up"),
                format!("version {}", field(&status, "/gateway/version")),
            ],
            vec![
                "NATS".into(),
                badge("up"),
                format!("version {}", field(&status, "/nats_version")),
            ],
            vec![
                "command service".into(),
                up(&status["command"]),
                probed(&status["command"]),
            ],
            vec![
                "projection service".into(),
                up(&status["projection"]),
                probed(&status["projection"]),
            ],
            vec![
                "schedulers".into(),
                status["schedulers"].as_array().map_or(0, Vec::len).to_string(),
                with("replicas heard".to_owned(), versions(&status["schedulers"])),
            ],
            vec![
                "runners".into(),
                runners.len().to_string(),
                with(format!("{busy} of {slots} slots in use"), versions(&status["runners"])),
            ],
            vec![
                "work queue".into(),
                field(&status, "/queue/waiting"),
                format!("waiting, {} in progress", field(&status, "/queue/in_progress")),
            ],
        ],
    ));
    body.push_str("</section><section aria-labelledby=\"runs\"><h2 id=\"runs\">Runs</h2>");
    let stats = &status["stats"];
    let rate = stats["failure_rate_last_day"].as_f64().unwrap_or(0.0) * 100.0;
    let _ = write!(
        body,
        "<dl class=\"figures\"><div><dt>Last hour</dt><dd>{}</dd></div><div><dt>Last day</dt><dd>{}</dd></div>\
         <div><dt>Failure rate (day)</dt><dd>{rate:.1} %</dd></div></dl>",
        field(stats, "/runs_last_hour"),
        field(stats, "/runs_last_day"),
    );
    let by_state = |key: &str| -> Vec<Vec<String>> {
        stats[key]
            .as_object()
            .map(|m| m.iter().map(|(state, n)| vec![badge(state), n.to_string()]).collect())
            .unwrap_or_default()
    };
    body.push_str(&table("Runs by state", &["State", "Runs"], &by_state("runs")));
    body.push_str(&table(
        "Pipelines by state",
        &["State", "Pipelines"],
        &by_state("pipelines"),
    ));
    let fires: Vec<Vec<String>> = stats["next_fires"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|f| {
                    let pipeline = field(f, "/pipeline_id");
                    let name = f["pipeline_name"].as_str().map_or_else(|| pipeline.clone(), esc);
                    vec![
                        html::local_time(f, "/at"),
                        format!("<a href=\"/console/pipelines/{pipeline}\">{name}</a>"),
                        format!("<a href=\"/console/schedules?pipeline={pipeline}\">schedule</a>"),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    body.push_str("</section><section aria-labelledby=\"fires\"><h2 id=\"fires\">Next schedule fires</h2>");
    body.push_str(&table(
        "The next fires across all active schedules",
        &["When", "Pipeline", ""],
        &fires,
    ));
    body.push_str("</section><section aria-labelledby=\"projections\"><h2 id=\"projections\">Read models</h2>");
    let projections: Vec<Vec<String>> = status["projections"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|p| {
                    vec![
                        field(p, "/name"),
                        field(p, "/position"),
                        field(p, "/lag_events"),
                        format!("{} ms", field(p, "/lag_ms")),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    body.push_str(&table(
        "Projections and their lag",
        &["Projection", "Position", "Lag (events)", "Lag (time)"],
        &projections,
    ));
    body.push_str("</section></div>");
    html::page("Overview", Some(&caller.principal), &body)
}

/// A page after a write: the global position the write reached (`?after=`).
#[derive(Debug, Default, Deserialize)]
pub struct After {
    after: Option<u64>,
}

/// `{"id": id}`, waiting for `after` when given.
fn get_body(id: uuid::Uuid, after: &After) -> Value {
    match after.after {
        Some(position) => json!({"id": id, "min_position": position}),
        None => json!({"id": id}),
    }
}

/// List parameters of a console page.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    /// The position of a write just made (the list waits for it).
    after: Option<u64>,
    q: Option<String>,
    state: Option<String>,
    pipeline: Option<String>,
    /// Runs requested since: RFC 3339, `YYYY-MM-DDTHH:MM` or `YYYY-MM-DD` (UTC).
    since: Option<String>,
    cursor: Option<String>,
}

/// A time typed into a filter as RFC 3339: RFC 3339 as it is, `YYYY-MM-DDTHH:MM[:SS]` and
/// `YYYY-MM-DD` as UTC; anything else as typed (the query service says what is wrong).
fn filter_time(text: &str) -> String {
    use chrono::{NaiveDate, NaiveDateTime};
    if chrono::DateTime::parse_from_rfc3339(text).is_ok() {
        return text.to_owned();
    }
    let naive = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        });
    naive.map_or_else(|| text.to_owned(), |n| n.and_utc().to_rfc3339())
}

impl ListParams {
    /// `query` with the filters given: a name prefix (`q`, where `by_name`), the state, the
    /// pipeline, the page's cursor, and the position of a write just made.
    fn apply(&self, mut query: Value, by_name: bool) -> Value {
        let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
        if let Some(q) = given(&self.q).filter(|_| by_name) {
            query["name"] = format!("{}*", q.trim_end_matches('*')).into();
        }
        if let Some(state) = given(&self.state) {
            query["state"] = state.into();
        }
        if let Some(pipeline) = given(&self.pipeline).filter(|_| !by_name) {
            query["pipeline_id"] = pipeline.into();
        }
        if let Some(since) = given(&self.since) {
            query["since"] = filter_time(&since).into();
        }
        if let Some(cursor) = given(&self.cursor) {
            query["cursor"] = cursor.into();
        }
        if let Some(position) = self.after {
            query["min_position"] = position.into();
        }
        query
    }
}

/// `GET /console/pipelines?q=&state=&cursor=`.
pub async fn pipelines(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<ListParams>,
) -> Response {
    let query = params.apply(json!({"limit": PAGE, "sort_by": "name", "order": "asc"}), true);
    let (items, next) = match data(&gateway, &caller, "pipeline.list", &query).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let rows: Vec<Vec<String>> = items
        .as_array()
        .map(|all| {
            all.iter()
                .map(|p| {
                    vec![
                        format!(
                            "<a href=\"/console/pipelines/{}\">{}</a>",
                            field(p, "/pipeline_id"),
                            field(p, "/name")
                        ),
                        badge(p["state"].as_str().unwrap_or("")),
                        p["last_run"]["state"].as_str().map(badge).unwrap_or_default(),
                        time(p, "/next_fire"),
                        p["tags"]
                            .as_array()
                            .map(|t| {
                                t.iter()
                                    .filter_map(Value::as_str)
                                    .map(esc)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            })
                            .unwrap_or_default(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let mut body = format!(
        "<form method=\"get\" class=\"filters\" role=\"search\"><label for=\"q\">Name starts with</label>\
         <input id=\"q\" name=\"q\" value=\"{}\"><label for=\"state\">State</label>{}\
         <button type=\"submit\" class=\"button\">Filter</button></form>",
        esc(params.q.as_deref().unwrap_or("")),
        state_select(params.state.as_deref(), &["active", "paused", "archived"]),
    );
    if caller.principal.may(ApiRole::Admin) {
        body.push_str("<p><a class=\"button\" href=\"/console/pipelines/new\">New pipeline</a></p>");
    }
    body.push_str(&table(
        "Pipelines",
        &["Name", "State", "Last run", "Next fire", "Tags"],
        &rows,
    ));
    body.push_str(&next_link("/console/pipelines", &params, next.as_deref()));
    html::page("Pipelines", Some(&caller.principal), &body)
}

fn state_select(chosen: Option<&str>, states: &[&str]) -> String {
    let mut out = String::from("<select id=\"state\" name=\"state\"><option value=\"\">any</option>");
    for state in states {
        let selected = if chosen == Some(*state) { " selected" } else { "" };
        let _ = write!(out, "<option{selected}>{state}</option>");
    }
    out.push_str("</select>");
    out
}

fn next_link(path: &str, params: &ListParams, next: Option<&str>) -> String {
    let Some(next) = next else { return String::new() };
    let mut href = format!("{path}?cursor={}", html::url_value(next));
    for (key, value) in [
        ("q", &params.q),
        ("state", &params.state),
        ("pipeline", &params.pipeline),
        ("since", &params.since),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            let _ = write!(href, "&{key}={}", html::url_value(v));
        }
    }
    format!("<p><a rel=\"next\" href=\"{}\">Next page</a></p>", esc(&href))
}

/// `GET /console/pipelines/{id}`: the pipeline, its steps, its runs, its actions.
pub async fn pipeline(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(after): Query<After>,
) -> Response {
    let Ok(id) = parse_id(Collection::Pipelines, &id) else {
        return error_page(&caller, StatusCode::NOT_FOUND, "No such pipeline.");
    };
    let (p, _) = match data(&gateway, &caller, "pipeline.get", &get_body(id, &after)).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let runs_query = json!({"pipeline_id": id, "limit": 20});
    let schedules_query = json!({"pipeline_id": id, "limit": PAGE});
    let (runs, schedules) = tokio::join!(
        data(&gateway, &caller, "run.list", &runs_query),
        data(&gateway, &caller, "schedule.list", &schedules_query)
    );
    let ((runs, _), (schedules, _)) = match (runs, schedules) {
        (Ok(runs), Ok(schedules)) => (runs, schedules),
        (Err(page), _) | (_, Err(page)) => return page,
    };
    let principal = &caller.principal;
    let base = format!("/console/pipelines/{id}");
    let state = p["state"].as_str().unwrap_or("");
    let mut actions = String::new();
    if principal.may(ApiRole::Admin) && state != "archived" {
        actions.push_str(&format!(
            "<a class=\"button\" href=\"{base}/edit\">Edit</a><a class=\"button danger\" href=\"{base}/archive\">Archive…</a>"
        ));
    }
    if state == "active" {
        actions.push_str(&action_button(
            principal,
            ApiRole::Operator,
            &format!("{base}/execute"),
            "Run now",
            false,
        ));
        actions.push_str(&action_button(
            principal,
            ApiRole::Operator,
            &format!("{base}/pause"),
            "Pause",
            false,
        ));
    } else if state == "paused" {
        actions.push_str(&action_button(
            principal,
            ApiRole::Operator,
            &format!("{base}/resume"),
            "Resume",
            false,
        ));
    }
    let mut body = format!(
        "<p>{} · owner {} · version {}</p><div class=\"actions\">{actions}</div>",
        badge(state),
        field(&p, "/owner"),
        field(&p, "/definition_version"),
    );
    if let Some(description) = p["description"].as_str() {
        let _ = write!(body, "<p>{}</p>", esc(description));
    }
    let steps: Vec<Vec<String>> = p["definition"]["steps"]
        .as_array()
        .map(|all| {
            all.iter()
                .enumerate()
                .map(|(i, s)| {
                    vec![
                        (i + 1).to_string(),
                        field(s, "/plugin"),
                        field(s, "/kind"),
                        // Secrets appear in configs only as references (`${secret:NAME}`).
                        format!("<code>{}</code>", esc(&s["config"].to_string())),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    body.push_str(&table("Steps", &["#", "Plugin", "Kind", "Config"], &steps));
    let _ = write!(
        body,
        "<h2>Bookmark</h2><pre><code>{}</code></pre>",
        esc(&serde_json::to_string_pretty(&p["bookmark"]).unwrap_or_default())
    );
    body.push_str(&schedule_table(&caller, "Schedules", &schedules));
    body.push_str(&run_table("Recent runs", &runs));
    html::page(p["name"].as_str().unwrap_or("Pipeline"), Some(principal), &body)
}

fn run_table(caption: &str, runs: &Value) -> String {
    let rows: Vec<Vec<String>> = runs
        .as_array()
        .map(|all| {
            all.iter()
                .map(|r| {
                    vec![
                        format!("<a href=\"/console/runs/{0}\">{0}</a>", field(r, "/run_id")),
                        field(r, "/pipeline_name"),
                        badge(r["state"].as_str().unwrap_or("")),
                        field(r, "/trigger"),
                        field(r, "/records_total"),
                        time(r, "/requested_at"),
                        r["duration_ms"]
                            .as_u64()
                            .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                            .unwrap_or_default(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        caption,
        &[
            "Run",
            "Pipeline",
            "State",
            "Trigger",
            "Records",
            "Requested",
            "Duration",
        ],
        &rows,
    )
}

/// `GET /console/runs?state=&pipeline=&since=&cursor=`.
pub async fn runs(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<ListParams>,
) -> Response {
    let query = params.apply(json!({"limit": PAGE}), false);
    let (items, next) = match data(&gateway, &caller, "run.list", &query).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let mut body = format!(
        "<form method=\"get\" class=\"filters\"><label for=\"state\">State</label>{}\
         <label for=\"pipeline\">Pipeline id</label><input id=\"pipeline\" name=\"pipeline\" value=\"{}\">\
         <label for=\"since\">Requested since (UTC)</label>\
         <input id=\"since\" name=\"since\" placeholder=\"2026-12-05T08:00\" value=\"{}\">\
         <button type=\"submit\" class=\"button\">Filter</button></form>",
        state_select(
            params.state.as_deref(),
            &[
                "requested",
                "running",
                "awaiting_retry",
                "succeeded",
                "failed",
                "cancelled",
                "timed_out"
            ],
        ),
        esc(params.pipeline.as_deref().unwrap_or("")),
        esc(params.since.as_deref().unwrap_or("")),
    );
    body.push_str(&run_table("Runs, newest first", &items));
    body.push_str(&next_link("/console/runs", &params, next.as_deref()));
    html::page("Runs", Some(&caller.principal), &body)
}

/// `GET /console/runs/{id}`: attempts, counts (live while it runs), error, cancel.
pub async fn run(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(after): Query<After>,
) -> Response {
    let Ok(id) = parse_id(Collection::Runs, &id) else {
        return error_page(&caller, StatusCode::NOT_FOUND, "No such run.");
    };
    let (r, _) = match data(&gateway, &caller, "run.get", &get_body(id, &after)).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let state = r["state"].as_str().unwrap_or("");
    let finished = ["succeeded", "failed", "cancelled", "timed_out"].contains(&state);
    // A final run can be run again (a new run of its pipeline); a live one cancelled.
    let cancel = if finished {
        action_button(
            &caller.principal,
            ApiRole::Operator,
            &format!("/console/pipelines/{}/execute", field(&r, "/pipeline_id")),
            "Run again",
            false,
        )
    } else {
        action_button(
            &caller.principal,
            ApiRole::Operator,
            &format!("/console/runs/{id}/cancel"),
            "Cancel",
            true,
        )
    };
    // The script follows the run's events while it is not final (data-live), updating
    // the state, the counts and the progress; without it the page is as of loading.
    let mut body = format!(
        "<div class=\"run\" data-live=\"{live}\" data-events=\"/api/v1/flexcore/runs/{id}/events\">\
         <p>Pipeline <a href=\"/console/pipelines/{pid}\">{pname}</a> · <span data-field=\"state\">{state}</span> · \
         attempt {attempt} · trigger {trigger}</p>\
         <progress data-field=\"progress\" aria-label=\"Run progress\"{progress}></progress>\
         <div class=\"actions\">{cancel}</div>\
         <dl class=\"figures\"><div><dt>Records</dt><dd data-field=\"records_total\">{records}</dd></div>\
         <div><dt>Requested</dt><dd>{requested}</dd></div><div><dt>Duration</dt><dd>{duration}</dd></div></dl>",
        live = !finished,
        pid = field(&r, "/pipeline_id"),
        pname = field(&r, "/pipeline_name"),
        state = badge(state),
        attempt = field(&r, "/attempt"),
        trigger = field(&r, "/trigger"),
        progress = if finished { " value=\"1\" max=\"1\"" } else { "" },
        records = field(&r, "/records_total"),
        requested = time(&r, "/requested_at"),
        duration = r["duration_ms"]
            .as_u64()
            .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
            .unwrap_or_default(),
    );
    if let Some(error) = r.get("error").filter(|e| !e.is_null()) {
        let _ = write!(
            body,
            "<p class=\"error\" role=\"alert\"><strong>{}</strong>: {}</p>",
            field(error, "/code"),
            field(error, "/message")
        );
    }
    let counters: Vec<Vec<String>> = r["counters"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(stream, n)| vec![esc(stream), format!("<span data-stream=\"{}\">{n}</span>", esc(stream))])
                .collect()
        })
        .unwrap_or_default();
    body.push_str(&table("Records per stream", &["Stream", "Records"], &counters));
    let attempts: Vec<Vec<String>> = r["attempts"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|a| {
                    vec![
                        field(a, "/attempt"),
                        field(a, "/runner_id"),
                        a["outcome"].as_str().map(badge).unwrap_or_default(),
                        time(a, "/claimed_at"),
                        time(a, "/ended_at"),
                        field(a, "/error/message"),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    body.push_str(&table(
        "Attempts",
        &["Attempt", "Runner", "Outcome", "Claimed", "Ended", "Error"],
        &attempts,
    ));
    // The plugins' log lines stored so far.
    let lines = crate::api::streams::stored_lines(&gateway, &caller, id, RUN_LOG_LINES)
        .await
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            vec![
                l.at.format("%H:%M:%S%.3f").to_string(),
                l.attempt.to_string(),
                esc(l.plugin.as_str()),
                format!("<code>{}</code>", esc(&l.line)),
            ]
        })
        .collect();
    // While the run is live the script replaces these with the log stream (stored lines
    // first, then new ones as they come).
    if finished {
        body.push_str("<div>");
    } else {
        let _ = write!(body, "<div data-log=\"/api/v1/flexcore/runs/{id}/logs/stream\">");
    }
    body.push_str(&table(
        &format!("Log lines (the first {RUN_LOG_LINES})"),
        &["At (UTC)", "Attempt", "Plugin", "Line"],
        &rows,
    ));
    body.push_str("</div>");
    body.push_str("</div>");
    html::page(&format!("Run {id}"), Some(&caller.principal), &body)
}

/// `GET /console/schedules?state=&pipeline=&cursor=`: each schedule with its next fires.
pub async fn schedules(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<ListParams>,
) -> Response {
    let query = params.apply(json!({"limit": PAGE}), false);
    let (items, next) = match data(&gateway, &caller, "schedule.list", &query).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let mut body = format!(
        "<form method=\"get\" class=\"filters\"><label for=\"state\">State</label>{}\
         <button type=\"submit\" class=\"button\">Filter</button></form>",
        state_select(params.state.as_deref(), &["active", "paused", "deleted"]),
    );
    body.push_str(&schedule_table(
        &caller,
        "Schedules (next fires in the schedule's zone; your browser adds its own)",
        &items,
    ));
    body.push_str(&next_link("/console/schedules", &params, next.as_deref()));
    html::page("Schedules", Some(&caller.principal), &body)
}

/// Schedules with their next fires, slots and actions.
fn schedule_table(caller: &Caller, caption: &str, items: &Value) -> String {
    let now = chrono::Utc::now();
    let rows: Vec<Vec<String>> = items
        .as_array()
        .map(|all| {
            all.iter()
                .map(|s| {
                    let id = field(s, "/schedule_id");
                    let state = s["state"].as_str().unwrap_or("");
                    let (label, action) = if state == "paused" {
                        ("Resume", "resume")
                    } else {
                        ("Pause", "pause")
                    };
                    let button = if state == "deleted" {
                        String::new()
                    } else {
                        let mut buttons = action_button(
                            &caller.principal,
                            ApiRole::Operator,
                            &format!("/console/schedules/{id}/{action}"),
                            label,
                            false,
                        );
                        if caller.principal.may(ApiRole::Operator) {
                            buttons.push_str(&format!(" <a href=\"/console/schedules/{id}/backfill\">Backfill</a>"));
                        }
                        buttons
                    };
                    vec![
                        format!("<a href=\"/console/pipelines/{0}\">{0}</a>", field(s, "/pipeline_id")),
                        format!("<code>{}</code>", field(s, "/spec/cron")),
                        field(s, "/spec/timezone"),
                        badge(state),
                        next_fires(s, now),
                        format!(
                            "{} skipped, {} missed{}",
                            field(s, "/slots_skipped"),
                            field(s, "/slots_missed"),
                            s["last_skipped"]["reason"]
                                .as_str()
                                .map(|r| format!(" (last: {})", esc(r)))
                                .unwrap_or_default()
                        ),
                        button,
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        caption,
        &["Pipeline", "Cron", "Zone", "State", "Next fires", "Slots", ""],
        &rows,
    )
}

/// The next five fires of a schedule view, in its zone (each a `<time>` the script shows in
/// the viewer's zone too).
fn next_fires(schedule: &Value, now: chrono::DateTime<chrono::Utc>) -> String {
    let Ok(spec) = serde_json::from_value::<flexcore_contracts::model::ScheduleSpec>(schedule["spec"].clone()) else {
        return String::new();
    };
    if schedule["state"] != json!("active") {
        return String::new();
    }
    let Ok(calendar) = flexcore_cron::Calendar::new(&spec) else {
        return String::new();
    };
    let Ok(zone) = flexcore_cron::parse_zone(&spec.timezone) else {
        return String::new();
    };
    let fires = calendar.slots_between(now, now + chrono::Duration::days(366), 5);
    let items: Vec<String> = fires
        .iter()
        .map(|at| {
            format!(
                "<li><time datetime=\"{}\" data-local>{}</time></li>",
                at.to_rfc3339(),
                at.with_timezone(&zone).format("%Y-%m-%d %H:%M %Z")
            )
        })
        .collect();
    format!("<ul class=\"fires\">{}</ul>", items.join(""))
}

/// `GET /console/plugins`: the catalogue.
pub async fn plugins(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<ListParams>,
) -> Response {
    let query = params.apply(json!({"limit": PAGE, "sort_by": "name", "order": "asc"}), true);
    let (items, next) = match data(&gateway, &caller, "plugin.list", &query).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let rows: Vec<Vec<String>> = items
        .as_array()
        .map(|all| {
            all.iter()
                .map(|p| {
                    let grants = &p["grants"];
                    let granted = ["dirs", "env", "allowed_hosts"]
                        .iter()
                        .map(|k| grants[*k].as_array().map_or(0, Vec::len))
                        .sum::<usize>();
                    vec![
                        format!("{}@{}", field(p, "/name"), field(p, "/version")),
                        field(p, "/kind"),
                        field(p, "/runtime"),
                        badge(p["state"].as_str().unwrap_or("")),
                        format!(
                            "<code title=\"{0}\">{1}</code>",
                            field(p, "/module_digest"),
                            esc(&p["module_digest"]
                                .as_str()
                                .unwrap_or("")
                                .chars()
                                .take(19)
                                .collect::<String>())
                        ),
                        if granted == 0 {
                            "none".to_owned()
                        } else {
                            format!("<code>{}</code>", esc(&grants.to_string()))
                        },
                        format!("<code>{}</code>", esc(&p["limits"].to_string())),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let mut body = format!(
        "<form method=\"get\" class=\"filters\" role=\"search\"><label for=\"q\">Name starts with</label>\
         <input id=\"q\" name=\"q\" value=\"{}\"><button type=\"submit\" class=\"button\">Filter</button></form>",
        esc(params.q.as_deref().unwrap_or("")),
    );
    body.push_str(&table(
        "Plugins",
        &["Plugin", "Kind", "Runtime", "State", "Digest", "Grants", "Limits"],
        &rows,
    ));
    body.push_str(&next_link("/console/plugins", &params, next.as_deref()));
    if caller.principal.may(ApiRole::Admin) {
        body.push_str(
            "<h2>Upload a module</h2>\
             <form method=\"post\" action=\"/console/plugins\" enctype=\"multipart/form-data\" class=\"login\">\
             <label for=\"name\">Name</label><input id=\"name\" name=\"name\" required pattern=\"[a-z0-9_-]+\">\
             <label for=\"version\">Version</label><input id=\"version\" name=\"version\" required placeholder=\"1.0.0\">\
             <label for=\"kind\">Kind</label><select id=\"kind\" name=\"kind\"><option>extractor</option><option>transformer</option><option>loader</option></select>\
             <label for=\"module\">WebAssembly module</label><input id=\"module\" name=\"module\" type=\"file\" accept=\".wasm,application/wasm\" required>\
             <button type=\"submit\" class=\"button\">Upload and register</button></form>",
        );
    }
    html::page("Plugins", Some(&caller.principal), &body)
}

/// Filters of the audit log page.
#[derive(Debug, Default, Deserialize)]
pub struct AuditParams {
    aggregate_type: Option<String>,
    event_type: Option<String>,
    aggregate_id: Option<String>,
    since: Option<String>,
    cursor: Option<String>,
}

/// `GET /console/events`: the audit log, newest first, with a live tail.
pub async fn events(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<AuditParams>,
) -> Response {
    let mut query = json!({"limit": PAGE});
    let mut stream = Vec::new();
    for (key, value) in [
        ("aggregate_type", &params.aggregate_type),
        ("event_type", &params.event_type),
        ("aggregate_id", &params.aggregate_id),
        ("since", &params.since),
        ("cursor", &params.cursor),
    ] {
        if let Some(v) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            query[key] = v.into();
            if matches!(key, "aggregate_type" | "event_type" | "aggregate_id") {
                stream.push(format!("{key}={}", html::url_value(v)));
            }
        }
    }
    let (items, next) = match data(&gateway, &caller, "event.list", &query).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let rows = event_rows(&items);
    let selected = |chosen: &Option<String>, value: &str| {
        if chosen.as_deref() == Some(value) {
            " selected"
        } else {
            ""
        }
    };
    let mut types = String::from("<option value=\"\">any</option>");
    for t in ["plugin", "pipeline", "run", "schedule"] {
        let _ = write!(types, "<option{}>{t}</option>", selected(&params.aggregate_type, t));
    }
    let mut body = format!(
        "<form method=\"get\" class=\"filters\"><label for=\"aggregate_type\">Aggregate</label>\
         <select id=\"aggregate_type\" name=\"aggregate_type\">{types}</select>\
         <label for=\"event_type\">Event type</label><input id=\"event_type\" name=\"event_type\" value=\"{}\" placeholder=\"run.succeeded\">\
         <label for=\"aggregate_id\">Aggregate id</label><input id=\"aggregate_id\" name=\"aggregate_id\" value=\"{}\">\
         <label for=\"since\">Since</label><input id=\"since\" name=\"since\" value=\"{}\" placeholder=\"2026-12-05T00:00:00Z\">\
         <button type=\"submit\" class=\"button\">Filter</button></form>",
        esc(params.event_type.as_deref().unwrap_or("")),
        esc(params.aggregate_id.as_deref().unwrap_or("")),
        esc(params.since.as_deref().unwrap_or("")),
    );
    // The script prepends new events from the stream (with the same filters) while the
    // first page is shown.
    let tail = if params.cursor.is_none() {
        format!(
            " data-tail=\"/api/v1/flexcore/events/stream{}\"",
            esc(&if stream.is_empty() {
                String::new()
            } else {
                format!("?{}", stream.join("&"))
            })
        )
    } else {
        String::new()
    };
    let _ = write!(body, "<div class=\"audit\"{tail}>");
    body.push_str(&table(
        "Events, newest first",
        &[
            "Position",
            "Recorded",
            "Type",
            "Aggregate",
            "Actor",
            "Correlation",
            "Data",
        ],
        &rows,
    ));
    body.push_str("</div>");
    let cursor_link = next.map(|n| {
        let mut href = format!("/console/events?cursor={}", html::url_value(&n));
        for s in &stream {
            let _ = write!(href, "&{s}");
        }
        format!("<p><a rel=\"next\" href=\"{}\">Older events</a></p>", esc(&href))
    });
    body.push_str(&cursor_link.unwrap_or_default());
    html::page("Audit log", Some(&caller.principal), &body)
}

fn event_rows(items: &Value) -> Vec<Vec<String>> {
    items
        .as_array()
        .map(|all| {
            all.iter()
                .map(|e| {
                    vec![
                        field(e, "/global_position"),
                        time(e, "/recorded_at"),
                        field(e, "/type"),
                        format!("{} {}", field(e, "/aggregate_type"), field(e, "/aggregate_id")),
                        field(e, "/metadata/actor"),
                        field(e, "/metadata/correlation_id"),
                        format!("<code>{}</code>", esc(&e["data"].to_string())),
                    ]
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::filter_time;

    #[test]
    fn filter_times_are_rfc_3339_in_utc_and_the_rest_is_kept_as_typed() {
        assert_eq!(filter_time("2026-12-05T08:00:00+01:00"), "2026-12-05T08:00:00+01:00");
        assert_eq!(filter_time("2026-12-05T08:00"), "2026-12-05T08:00:00+00:00");
        assert_eq!(filter_time("2026-12-05 08:00"), "2026-12-05T08:00:00+00:00");
        assert_eq!(filter_time("2026-12-05"), "2026-12-05T00:00:00+00:00");
        assert_eq!(filter_time("yesterday"), "yesterday");
    }
}
