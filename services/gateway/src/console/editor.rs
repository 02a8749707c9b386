//! Creating and editing a pipeline as YAML, in the format of `flexctl pipeline create -f`
//! (the same parser: `flexcore-pipeline-file`). Errors, the file's own and the command
//! service's refusals, are shown at their line, with the text kept as typed.

use std::fmt::Write as _;
use std::path::Path as FilePath;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Extension;
use flexcore_contracts::{ErrorBody, ErrorReason};
use flexcore_pipeline_file::pipeline_file::{self, Loaded};
use flexcore_security::ApiRole;
use serde::Deserialize;
use serde_json::{json, Value};

use super::html::{self, esc};
use super::pages;
use crate::api::commands::{send_accepted, Request as CommandRequest, Success};
use crate::api::{parse_id, queries, Collection, BASE};
use crate::{Caller, Gateway};

/// The name errors give the text.
const FILE: &str = "pipeline.yaml";

/// What a new pipeline starts from.
const EXAMPLE: &str = "\
name: my-pipeline
owner: data-team
description: Generated records, discarded
tags: [example]
steps:
  - plugin: generator@0.1.0
    config: {records: 1000}
  - plugin: discard@0.1.0
schedules:
  - cron: \"0 3 * * *\"
    timezone: Europe/Berlin
";

/// The editor page: `text`, and `error` (`file:line:column: message`) with its line marked.
fn editor(caller: &Caller, title: &str, action: &str, text: &str, error: Option<&str>) -> Response {
    let line = error
        .and_then(|e| e.split(':').nth(1))
        .and_then(|l| l.parse::<usize>().ok());
    let mut body = String::new();
    if let Some(error) = error {
        let _ = write!(
            body,
            "<p class=\"error\" role=\"alert\" id=\"error\">{}</p>",
            esc(error)
        );
        // The text with line numbers, the line at fault marked.
        body.push_str("<ol class=\"source\" aria-label=\"The pipeline file by line\">");
        for (i, text_line) in text.lines().enumerate() {
            let class = if Some(i + 1) == line { " class=\"at-fault\"" } else { "" };
            let _ = write!(body, "<li{class}><code>{}</code></li>", esc(text_line));
        }
        body.push_str("</ol>");
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"{}\" class=\"editor\">\
         <label for=\"yaml\">Pipeline file (YAML, as <code>flexctl pipeline create -f</code> takes it)</label>\
         <textarea id=\"yaml\" name=\"yaml\" rows=\"24\" spellcheck=\"false\"{}>{}</textarea>\
         <button type=\"submit\" class=\"button\">Save</button></form>",
        esc(action),
        if error.is_some() {
            " aria-describedby=\"error\""
        } else {
            ""
        },
        esc(text)
    );
    let mut response = html::page(title, Some(&caller.principal), &body);
    if error.is_some() {
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    response
}

/// `GET /console/pipelines/new`.
pub async fn new_page(Extension(caller): Extension<Caller>) -> Response {
    if !caller.principal.may(ApiRole::Admin) {
        return pages::error_page(&caller, StatusCode::FORBIDDEN, "Creating pipelines needs role admin.");
    }
    editor(&caller, "New pipeline", "/console/pipelines/new", EXAMPLE, None)
}

/// The editor's form.
#[derive(Debug, Deserialize)]
pub struct EditorForm {
    yaml: String,
}

/// `POST /console/pipelines/new`: parse, `pipeline.create`, then each schedule.
pub async fn create(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Form(form): Form<EditorForm>,
) -> Response {
    let action = "/console/pipelines/new";
    let loaded = match pipeline_file::parse(FilePath::new(FILE), &form.yaml) {
        Ok(loaded) => loaded,
        Err(e) => return editor(&caller, "New pipeline", action, &form.yaml, Some(&e.to_string())),
    };
    let body = match serde_json::to_vec(&loaded.pipeline) {
        Ok(body) => Bytes::from(body),
        Err(e) => return editor(&caller, "New pipeline", action, &form.yaml, Some(&e.to_string())),
    };
    let created = command(
        &gateway,
        &caller,
        &headers,
        "pipeline.create",
        &format!("{BASE}/pipelines"),
        &body,
    )
    .await;
    let (pipeline_id, position) = match created {
        Ok(done) => done,
        Err(error) => {
            let message = loaded.refusal("", &error).to_string();
            return editor(&caller, "New pipeline", action, &form.yaml, Some(&message));
        }
    };
    let mut last = position;
    for (i, schedule) in loaded.pipeline.schedules.iter().enumerate() {
        // As flexctl sends it: the file's entry with the pipeline's id.
        let mut body = serde_json::to_value(schedule).unwrap_or(Value::Null);
        body["pipeline_id"] = json!(pipeline_id);
        let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        match command(
            &gateway,
            &caller,
            &headers,
            "schedule.create",
            &format!("{BASE}/schedules"),
            &body,
        )
        .await
        {
            Ok((_, position)) => last = position,
            Err(error) => {
                // The pipeline exists: say so, and where the schedule is wrong.
                let message = format!(
                    "pipeline created, but {}",
                    loaded.refusal(&format!("schedules[{i}]"), &error)
                );
                return editor(&caller, "New pipeline", action, &form.yaml, Some(&message));
            }
        }
    }
    super::redirect(&format!("/console/pipelines/{pipeline_id}?after={last}"))
}

/// `GET /console/pipelines/{id}/edit`: the current definition as a pipeline file.
pub async fn edit_page(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    if !caller.principal.may(ApiRole::Admin) {
        return pages::error_page(&caller, StatusCode::FORBIDDEN, "Editing pipelines needs role admin.");
    }
    let Ok(id) = parse_id(Collection::Pipelines, &id) else {
        return pages::error_page(&caller, StatusCode::NOT_FOUND, "No such pipeline.");
    };
    let view = match queries::ask(&gateway, "pipeline.get", &json!({"id": id})).await {
        Ok(ok) => serde_json::from_str::<Value>(ok.data.as_str()).unwrap_or(Value::Null),
        Err(problem) => {
            return pages::error_page(
                &caller,
                StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_GATEWAY),
                &problem.detail,
            )
        }
    };
    let action = format!("/console/pipelines/{id}/edit");
    editor(&caller, "Edit pipeline", &action, &as_file(&view), None)
}

/// A pipeline view as a pipeline file (its definition; JSON is YAML too, so nested
/// configs keep every value exactly).
fn as_file(view: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "name: {}", view["name"]);
    let _ = writeln!(out, "owner: {}", view["owner"]);
    if let Some(description) = view.get("description").filter(|d| !d.is_null()) {
        let _ = writeln!(out, "description: {description}");
    }
    let _ = writeln!(out, "tags: {}", view["tags"]);
    let definition = &view["definition"];
    let _ = writeln!(out, "max_active_runs: {}", definition["max_active_runs"]);
    let _ = writeln!(out, "run_timeout_seconds: {}", definition["run_timeout_seconds"]);
    let _ = writeln!(out, "retry: {}", definition["retry"]);
    out.push_str("steps:\n");
    for step in definition["steps"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  - plugin: {}", step["plugin"]);
        if step["config"].as_object().is_some_and(|c| !c.is_empty()) {
            let _ = writeln!(out, "    config: {}", step["config"]);
        }
    }
    out
}

/// `POST /console/pipelines/{id}/edit`: `pipeline.update` (the name must stay).
pub async fn update(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<EditorForm>,
) -> Response {
    let Ok(id) = parse_id(Collection::Pipelines, &id) else {
        return pages::error_page(&caller, StatusCode::NOT_FOUND, "No such pipeline.");
    };
    let action = format!("/console/pipelines/{id}/edit");
    let fail = |message: &str| editor(&caller, "Edit pipeline", &action, &form.yaml, Some(message));
    let loaded: Loaded = match pipeline_file::parse(FilePath::new(FILE), &form.yaml) {
        Ok(loaded) => loaded,
        Err(e) => return fail(&e.to_string()),
    };
    let current = match queries::ask(&gateway, "pipeline.get", &json!({"id": id})).await {
        Ok(ok) => serde_json::from_str::<Value>(ok.data.as_str()).unwrap_or(Value::Null),
        Err(problem) => return fail(&problem.detail),
    };
    if current["name"].as_str() != Some(loaded.pipeline.name.as_str()) {
        let message = loaded
            .error_at(
                "name",
                &format!("a pipeline cannot be renamed: this one is {}", current["name"]),
            )
            .to_string();
        return fail(&message);
    }
    let mut body = serde_json::to_value(&loaded.pipeline).unwrap_or(Value::Null);
    if let Some(map) = body.as_object_mut() {
        map.remove("name");
        map.insert("pipeline_id".into(), json!(id));
        map.entry("description").or_insert(Value::Null);
        map.retain(|_, v| !v.is_null());
    }
    let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let path = format!("{BASE}/pipelines/{id}");
    match command(&gateway, &caller, &headers, "pipeline.update", &path, &body).await {
        Ok((_, position)) => super::redirect(&format!("/console/pipelines/{id}?after={position}")),
        Err(error) => fail(&loaded.refusal("", &error).to_string()),
    }
}

/// Sends `command` (admin) with `body` for `caller`: the aggregate id and the position
/// reached, or the refusal as the contract's error (for a line to point at).
async fn command(
    gateway: &Gateway,
    caller: &Caller,
    headers: &HeaderMap,
    command: &str,
    path: &str,
    body: &Bytes,
) -> Result<(String, u64), ErrorBody> {
    let mut headers = headers.clone();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    headers.remove("idempotency-key");
    headers.remove(axum::http::header::IF_MATCH);
    let request = CommandRequest {
        command: command.to_owned(),
        needed: ApiRole::Admin,
        fields: Vec::new(),
        body,
        success: Success::Ok,
    };
    match send_accepted(gateway, caller, &Method::POST, path, &headers, request).await {
        Ok(accepted) => Ok((accepted.aggregate_id.to_string(), accepted.global_position)),
        Err(problem) => {
            let pointer = problem.errors.first().map(|e| e.field.clone()).unwrap_or_default();
            let reason = match problem.status {
                403 => ErrorReason::Unauthorized,
                404 => ErrorReason::NotFound,
                409 => ErrorReason::Exists,
                _ => ErrorReason::InvalidValue,
            };
            Err(if pointer.starts_with('/') {
                ErrorBody::at(reason, &pointer, problem.detail.clone())
            } else {
                ErrorBody::new(reason, problem.detail.clone())
            })
        }
    }
}
