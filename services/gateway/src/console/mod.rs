//! The web console at `/`: server-rendered pages over the same queries and commands as
//! the API, signed in with an API key or a JWT (kept in an `HttpOnly`, `SameSite=Strict`
//! cookie), showing each caller only the actions its role allows. Pages read without
//! JavaScript; the console's one script (`/console/assets/console.js`) adds live updates
//! (a run's counts over its Server-Sent Events, the overview's refresh).
//!
//! # Layout
//! - this file: routes, the session cookie, sign-in and sign-out, actions.
//! - [`html`]: escaping and the layout.
//! - [`pages`]: overview, pipelines, a pipeline, runs, a run, schedules, plugins, the
//!   audit log.
//! - [`editor`]: creating and editing a pipeline as YAML, errors at their line.

pub mod editor;
pub mod html;
pub mod pages;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use flexcore_security::ApiRole;
use serde::Deserialize;
use serde_json::Value;

use crate::api::commands::{send_accepted, Request as CommandRequest, Success};
use crate::api::{parse_id, Collection, BASE};
use crate::{Caller, Gateway};

/// The session cookie: the credential the caller signed in with.
pub const COOKIE: &str = "flexcore_session";

/// The console's routes.
pub fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/", get(pages::overview))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/pipelines", get(pages::pipelines))
        .route("/console/pipelines/new", get(editor::new_page).post(editor::create))
        .route("/console/pipelines/{id}", get(pages::pipeline))
        .route(
            "/console/pipelines/{id}/edit",
            get(editor::edit_page).post(editor::update),
        )
        .route(
            "/console/pipelines/{id}/archive",
            get(archive_page).post(archive_pipeline),
        )
        .route("/console/pipelines/{id}/{action}", post(pipeline_action))
        .route("/console/runs", get(pages::runs))
        .route("/console/runs/{id}", get(pages::run))
        .route("/console/runs/{id}/cancel", post(cancel_run))
        .route("/console/schedules", get(pages::schedules))
        .route("/console/schedules/{id}/backfill", get(backfill_page).post(backfill))
        .route("/console/schedules/{id}/{action}", post(schedule_action))
        .route(
            "/console/plugins",
            get(pages::plugins)
                .post(upload_plugin)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/console/events", get(pages::events))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
}

/// Whether `path` is the console's (its pages send a browser to sign in, not a 401).
pub fn is_console(path: &str) -> bool {
    path == "/" || path.starts_with("/console/")
}

/// Console paths served without a session: sign-in and the assets.
pub fn is_open(path: &str) -> bool {
    path == "/console/login" || path.starts_with("/console/assets/")
}

/// The credential in the session cookie, if any.
pub fn session(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Where a browser without a (valid) session goes: the sign-in page, back here after.
pub fn sign_in_redirect(path: &str) -> Response {
    let target = format!("/console/login?next={}", html::url_value(path));
    redirect(&target)
}

pub(crate) fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// A `next` that stays on this console (a path, never `//host` or a URL).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && is_console(n) => n,
        _ => "/",
    }
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
    failed: Option<String>,
}

async fn login_page(Query(query): Query<LoginQuery>) -> Response {
    let failed = if query.failed.is_some() {
        "<p class=\"error\" role=\"alert\">That key or token was not accepted.</p>"
    } else {
        ""
    };
    let body = format!(
        "{failed}<form method=\"post\" action=\"/console/login\" class=\"login\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <label for=\"token\">API key or JWT</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\" class=\"button\">Sign in</button></form>\
         <p class=\"hint\">Create a key with <code>flexctl api-key create NAME --role viewer|operator|admin</code>.</p>",
        next = html::esc(safe_next(query.next.as_deref()))
    );
    html::page("Sign in", None, &body)
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

/// Checks the credential as the API would, then keeps it in the session cookie.
async fn login(State(gateway): State<Arc<Gateway>>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim();
    let next = safe_next(form.next.as_deref());
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_graphic())
        && gateway.auth.authenticate(Some(&format!("Bearer {token}"))).is_ok();
    if !valid {
        return redirect(&format!("/console/login?failed=1&next={}", html::url_value(next)));
    }
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    let mut response = redirect(next);
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout() -> Response {
    let mut response = redirect("/console/login");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("flexcore_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

/// `POST /console/pipelines/{id}/execute|pause|resume`: the command, then back to a page.
async fn pipeline_action(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Ok(pipeline) = parse_id(Collection::Pipelines, &id) else {
        return pages::error_page(&caller, StatusCode::NOT_FOUND, "No such pipeline.");
    };
    let back = format!("/console/pipelines/{pipeline}");
    let empty = Bytes::new();
    let api_path = format!("{BASE}/pipelines/{pipeline}/{action}");
    let request = match action.as_str() {
        "execute" => {
            let run_id = uuid::Uuid::new_v4();
            CommandRequest {
                command: "run.request".to_owned(),
                needed: ApiRole::Operator,
                fields: vec![
                    ("pipeline_id", Value::from(pipeline.to_string())),
                    ("run_id", Value::from(run_id.to_string())),
                ],
                body: &empty,
                success: Success::Accepted(format!("/console/runs/{run_id}")),
            }
        }
        "pause" | "resume" | "archive" => CommandRequest {
            command: format!("pipeline.{action}"),
            needed: if action == "archive" {
                ApiRole::Admin
            } else {
                ApiRole::Operator
            },
            fields: vec![("pipeline_id", Value::from(pipeline.to_string()))],
            body: &empty,
            success: Success::Ok,
        },
        _ => return pages::error_page(&caller, StatusCode::NOT_FOUND, "No such action."),
    };
    act(&gateway, &caller, &api_path, &headers, request, &back).await
}

/// `GET /console/pipelines/{id}/archive`: what archiving means, and the button that does it.
async fn archive_page(Extension(caller): Extension<Caller>, Path(id): Path<String>) -> Response {
    let Ok(pipeline) = parse_id(Collection::Pipelines, &id) else {
        return pages::error_page(&caller, StatusCode::NOT_FOUND, "No such pipeline.");
    };
    let body = format!(
        "<p>An archived pipeline cannot run again or be changed, and its name becomes free. Its runs, \
         bookmark and history stay readable. This cannot be undone.</p><div class=\"actions\">{}\
         <a class=\"button\" href=\"/console/pipelines/{pipeline}\">Keep it</a></div>",
        html::action_button(
            &caller.principal,
            ApiRole::Admin,
            &format!("/console/pipelines/{pipeline}/archive"),
            "Archive the pipeline",
            true
        ),
    );
    html::page("Archive a pipeline", Some(&caller.principal), &body)
}

/// `POST /console/pipelines/{id}/archive`: `pipeline.archive` (admin).
async fn archive_pipeline(
    gateway: State<Arc<Gateway>>,
    caller: Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    pipeline_action(gateway, caller, Path((id, "archive".to_owned())), headers).await
}

/// `GET /console/schedules/{id}/backfill`: the form (`from`, `to`, `overlap`).
async fn backfill_page(Extension(caller): Extension<Caller>, Path(id): Path<String>) -> Response {
    let Ok(schedule) = parse_id(Collection::Schedules, &id) else {
        return pages::error_page(&caller, StatusCode::NOT_FOUND, "No such schedule.");
    };
    backfill_form(&caller, schedule, "")
}

fn backfill_form(caller: &Caller, schedule: uuid::Uuid, result: &str) -> Response {
    let now = chrono::Utc::now();
    let body = format!(
        "{result}<form method=\"post\" action=\"/console/schedules/{schedule}/backfill\" class=\"login\">\
         <label for=\"from\">From (RFC 3339)</label><input id=\"from\" name=\"from\" required value=\"{}\">\
         <label for=\"to\">To (RFC 3339, not in the future)</label><input id=\"to\" name=\"to\" required value=\"{}\">\
         <label for=\"overlap\">When the pipeline is at its active-run limit</label>\
         <select id=\"overlap\" name=\"overlap\"><option value=\"skip\">skip the slot (recorded)</option><option value=\"wait\">wait (send again later)</option></select>\
         <button type=\"submit\" class=\"button\">Request the slots' runs</button></form>\
         <p class=\"hint\">Each slot's run is requested once, however often this is sent.</p>",
        (now - chrono::Duration::days(1)).format("%Y-%m-%dT%H:00:00Z"),
        now.format("%Y-%m-%dT%H:00:00Z"),
    );
    html::page("Backfill a schedule", Some(&caller.principal), &body)
}

/// The backfill form.
#[derive(Debug, Deserialize)]
struct BackfillForm {
    from: String,
    to: String,
    overlap: String,
}

/// `POST /console/schedules/{id}/backfill`: `POST /schedules/{id}/backfill`, then what
/// became of every slot.
async fn backfill(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<BackfillForm>,
) -> Response {
    let Ok(schedule) = parse_id(Collection::Schedules, &id) else {
        return pages::error_page(&caller, StatusCode::NOT_FOUND, "No such schedule.");
    };
    let body = serde_json::json!({"from": form.from.trim(), "to": form.to.trim(), "overlap": form.overlap});
    let mut headers = headers.clone();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let answered = crate::api::backfill::backfill(
        State(gateway.clone()),
        Extension(caller.clone()),
        Path(schedule.to_string()),
        headers,
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
    .await;
    let result = match answered {
        Ok(response) => {
            let bytes = axum::body::to_bytes(response.into_body(), 4 << 20)
                .await
                .unwrap_or_default();
            let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let rows: Vec<Vec<String>> = answer["slots"]
                .as_array()
                .map(|all| {
                    all.iter()
                        .map(|s| {
                            vec![
                                html::time(s, "/slot"),
                                html::badge(s["result"].as_str().unwrap_or("")),
                                s["run_id"]
                                    .as_str()
                                    .map(|r| format!("<a href=\"/console/runs/{0}\">{0}</a>", html::esc(r)))
                                    .unwrap_or_default(),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            html::table("What became of each slot", &["Slot", "Result", "Run"], &rows)
        }
        Err(problem) => format!("<p class=\"error\" role=\"alert\">{}</p>", html::esc(&problem.detail)),
    };
    backfill_form(&caller, schedule, &result)
}

/// `POST /console/schedules/{id}/pause|resume`.
async fn schedule_action(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Ok(schedule) = parse_id(Collection::Schedules, &id) else {
        return pages::error_page(&caller, StatusCode::NOT_FOUND, "No such schedule.");
    };
    if !matches!(action.as_str(), "pause" | "resume") {
        return pages::error_page(&caller, StatusCode::NOT_FOUND, "No such action.");
    }
    let empty = Bytes::new();
    let request = CommandRequest {
        command: format!("schedule.{action}"),
        needed: ApiRole::Operator,
        fields: vec![("schedule_id", Value::from(schedule.to_string()))],
        body: &empty,
        success: Success::Ok,
    };
    let api_path = format!("{BASE}/schedules/{schedule}/{action}");
    act(&gateway, &caller, &api_path, &headers, request, "/console/schedules").await
}

/// `POST /console/plugins` (multipart: `name`, `version`, `kind`, `module`): the upload of
/// `POST /plugins`, with its checks, then the catalogue.
async fn upload_plugin(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Response {
    use crate::api::upload;
    use axum::extract::FromRequest as _;
    let done = async {
        crate::api::require(&caller.principal, ApiRole::Admin, "plugin.register")?;
        let _permit = upload::upload_permit(&gateway)?;
        let mut multipart = axum::extract::Multipart::from_request(request, &())
            .await
            .map_err(|e| crate::problem::Problem::invalid("header:Content-Type", e.body_text()))?;
        let mut metadata = serde_json::Map::new();
        let mut module = None;
        let read = async {
            while let Some(field) = multipart.next_field().await.map_err(upload::multipart_error)? {
                match field.name().unwrap_or("") {
                    "module" => module = Some(upload::read_module(field, gateway.settings.max_module_bytes).await?),
                    name @ ("name" | "version" | "kind") => {
                        let name = name.to_owned();
                        let text = field.text().await.map_err(upload::multipart_error)?;
                        metadata.insert(name, Value::from(text.trim()));
                    }
                    _ => {}
                }
            }
            Ok::<(), crate::problem::Problem>(())
        };
        tokio::time::timeout(gateway.settings.upload_timeout, read)
            .await
            .map_err(|_| crate::problem::Problem::invalid("part:module", "the upload did not arrive in time"))??;
        let (module, digest) =
            module.ok_or_else(|| crate::problem::Problem::invalid("part:module", "choose a .wasm file to upload"))?;
        let parts = upload::Parts {
            metadata: Bytes::from(serde_json::to_vec(&metadata).unwrap_or_default()),
            module,
            digest,
        };
        upload::store_and_register(&gateway, &caller, &format!("{BASE}/plugins"), &headers, parts).await
    };
    match done.await {
        Ok(response) if response.status().is_success() => redirect("/console/plugins"),
        Ok(response) => pages::error_page(&caller, response.status(), "The plugin was not registered."),
        Err(problem) => pages::error_page(
            &caller,
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST),
            &problem.detail,
        ),
    }
}

/// `POST /console/runs/{id}/cancel`.
async fn cancel_run(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Ok(run) = parse_id(Collection::Runs, &id) else {
        return pages::error_page(&caller, StatusCode::NOT_FOUND, "No such run.");
    };
    let empty = Bytes::new();
    let request = CommandRequest {
        command: "run.cancel".to_owned(),
        needed: ApiRole::Operator,
        fields: vec![("run_id", Value::from(run.to_string()))],
        body: &empty,
        success: Success::Ok,
    };
    let back = format!("/console/runs/{run}");
    act(
        &gateway,
        &caller,
        &format!("{BASE}/runs/{run}/cancel"),
        &headers,
        request,
        &back,
    )
    .await
}

/// Sends `request` as the API would; on success back to `back` (or where an execute's
/// `Location` points), else a page saying why.
async fn act(
    gateway: &Gateway,
    caller: &Caller,
    api_path: &str,
    headers: &HeaderMap,
    request: CommandRequest<'_>,
    back: &str,
) -> Response {
    let target = match &request.success {
        Success::Accepted(location) => location.clone(),
        _ => back.to_owned(),
    };
    let mut headers = headers.clone();
    headers.remove(header::CONTENT_TYPE);
    match send_accepted(gateway, caller, &Method::POST, api_path, &headers, request).await {
        // The next page reads this write: it waits for the position the command reached.
        Ok(accepted) => redirect(&format!("{target}?after={}", accepted.global_position)),
        Err(problem) => pages::error_page(
            caller,
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST),
            &problem.detail,
        ),
    }
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("console.css"))
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("console.js"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; flexcore_session=fck_x; b=2"),
        );
        assert_eq!(session(&headers).as_deref(), Some("fck_x"));
        headers.insert(header::COOKIE, HeaderValue::from_static("flexcore_session="));
        assert_eq!(session(&headers), None);
    }

    #[test]
    fn next_stays_on_the_console() {
        assert_eq!(safe_next(Some("/console/runs")), "/console/runs");
        for evil in [
            "//evil.example",
            "https://evil.example",
            "/\\evil.example",
            "/api/v1/flexcore/runs",
        ] {
            assert_eq!(safe_next(Some(evil)), "/", "{evil}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
