//! Commands: the request body is the command's body as the contract defines it, passed on
//! byte for byte (numbers and strings arrive exactly as sent); the gateway splices in
//! what comes from the path (`pipeline_id`, …) and the headers (`Idempotency-Key` →
//! `command_id`, `If-Match` → `expected_version`), and refuses a body that repeats them.
//!
//! - `Idempotency-Key`: the command id is derived from the caller, the request's method
//!   and path, and the key, so a retried request is the same command: the command service
//!   answers it with the first reply (and refuses a different body under the same key,
//!   422 `command_id_reused`). Without the header every request is a new command.
//! - `If-Match: "<version>"`: the aggregate version the caller decided on; 412 when the
//!   aggregate has moved on.
//! - Replies: `200` (`201` with a `Location` for a create, `202` with a `Location` for an
//!   execution) with the accepted reply, `ETag` = the aggregate's new version and
//!   `Consistency-Position` = the position of its last event (send it back as
//!   `Consistency-Position` to read this write).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use flexcore_client::Retry;
use flexcore_contracts::reply::Accepted;
use flexcore_security::ApiRole;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::{parse_id, require, Collection};
use crate::problem::Problem;
use crate::{Caller, Gateway, POSITION_HEADER};

/// Namespace of the command ids derived from idempotency keys.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a0e_8d4b_4c55_9a1e_0b7f_3c2d_e901);
/// Longest idempotency key.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// What one request asks: the command, the fields it splices in, and what to answer.
pub(crate) struct Request<'a> {
    pub(crate) command: String,
    pub(crate) needed: ApiRole,
    pub(crate) fields: Vec<(&'static str, Value)>,
    pub(crate) body: &'a Bytes,
    pub(crate) success: Success,
}

/// The reply's status and `Location`.
pub(crate) enum Success {
    Ok,
    Created(Collection),
    Accepted(String),
}

/// `POST /plugins`, `/pipelines`, `/schedules`: `plugin.register`, `pipeline.create`,
/// `schedule.create`; `POST /plugins` as `multipart/form-data` uploads the module too
/// ([`super::upload`]).
pub async fn create(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Response, Problem> {
    let collection = Collection::of_path(uri.path()).ok_or_else(|| Problem::no_route(uri.path()))?;
    if collection == Collection::Plugins && super::upload::is_multipart(&headers) {
        return super::upload::register(&gateway, &caller, uri.path(), &headers, request).await;
    }
    // The per-request layer has read the body already (within gateway.max_body_bytes).
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .map_err(|e| Problem::invalid("", format!("the request body could not be read: {e}")))?;
    let command = match collection {
        Collection::Plugins => "plugin.register",
        Collection::Pipelines => "pipeline.create",
        _ => "schedule.create",
    };
    let request = Request {
        command: command.to_owned(),
        needed: ApiRole::Admin,
        fields: Vec::new(),
        body: &body,
        success: Success::Created(collection),
    };
    send(&gateway, &caller, &Method::POST, uri.path(), &headers, request).await
}

/// `PUT /pipelines/{id}`, `/schedules/{id}`: `pipeline.update`, `schedule.update`.
pub async fn update(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let collection = Collection::of_path(uri.path()).ok_or_else(|| Problem::no_route(uri.path()))?;
    let id = parse_id(collection, &id)?;
    let request = Request {
        command: format!("{}.update", collection.aggregate()),
        needed: ApiRole::Admin,
        fields: vec![(collection.id_field(), Value::from(id.to_string()))],
        body: &body,
        success: Success::Ok,
    };
    send(&gateway, &caller, &Method::PUT, uri.path(), &headers, request).await
}

/// `DELETE /pipelines/{id}` (`pipeline.archive`: a pipeline's history stays) and
/// `DELETE /schedules/{id}` (`schedule.delete`).
pub async fn remove(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let collection = Collection::of_path(uri.path()).ok_or_else(|| Problem::no_route(uri.path()))?;
    let id = parse_id(collection, &id)?;
    let command = match collection {
        Collection::Pipelines => "pipeline.archive",
        _ => "schedule.delete",
    };
    let request = Request {
        command: command.to_owned(),
        needed: ApiRole::Admin,
        fields: vec![(collection.id_field(), Value::from(id.to_string()))],
        body: &body,
        success: Success::Ok,
    };
    send(&gateway, &caller, &Method::DELETE, uri.path(), &headers, request).await
}

/// `POST /<collection>/{id}/<action>`: the aggregate's action, or a pipeline's `execute`
/// (`run.request`; 202 with the run's `Location`).
pub async fn action(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    OriginalUri(uri): OriginalUri,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let collection = Collection::of_path(uri.path()).ok_or_else(|| Problem::no_route(uri.path()))?;
    let allowed: &[(&str, ApiRole)] = match collection {
        Collection::Plugins => &[
            ("deprecate", ApiRole::Admin),
            ("disable", ApiRole::Admin),
            ("enable", ApiRole::Admin),
        ],
        Collection::Pipelines => &[
            ("pause", ApiRole::Operator),
            ("resume", ApiRole::Operator),
            ("archive", ApiRole::Admin),
            ("execute", ApiRole::Operator),
        ],
        Collection::Runs => &[("cancel", ApiRole::Operator)],
        Collection::Schedules => &[("pause", ApiRole::Operator), ("resume", ApiRole::Operator)],
        Collection::Events => &[],
    };
    let Some((_, needed)) = allowed.iter().find(|(a, _)| *a == action) else {
        return Err(Problem::no_route(uri.path()));
    };
    let id = parse_id(collection, &id)?;
    let request = if collection == Collection::Pipelines && action == "execute" {
        // The command makes a new run: there is no version of it to match.
        if headers.contains_key(header::IF_MATCH) {
            return Err(Problem::invalid(
                "header:If-Match",
                "execute makes a new run, so If-Match does not apply; pause or update the pipeline to change it",
            ));
        }
        let run_id = derived_id(&caller, &Method::POST, uri.path(), &headers, "run")?.unwrap_or_else(Uuid::new_v4);
        Request {
            command: "run.request".to_owned(),
            needed: *needed,
            fields: vec![
                ("pipeline_id", Value::from(id.to_string())),
                ("run_id", Value::from(run_id.to_string())),
            ],
            body: &body,
            success: Success::Accepted(format!("{}/runs/{run_id}", super::BASE)),
        }
    } else {
        Request {
            command: format!("{}.{action}", collection.aggregate()),
            needed: *needed,
            fields: vec![(collection.id_field(), Value::from(id.to_string()))],
            body: &body,
            success: Success::Ok,
        }
    };
    send(&gateway, &caller, &Method::POST, uri.path(), &headers, request).await
}

/// The body of `POST /commands`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    /// `pipeline.create`, …
    command: String,
    /// The command's body.
    #[serde(borrow)]
    body: &'a serde_json::value::RawValue,
}

/// `POST /commands`: `{"command": "<aggregate>.<action>", "body": {…}}`, any command the
/// caller's role may send (the command service decides).
pub async fn generic(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    json_content(&headers, &body)?;
    let envelope: Envelope = serde_json::from_slice(&body).map_err(|e| {
        Problem::invalid(
            "",
            format!("the body must be {{\"command\": \"<aggregate>.<action>\", \"body\": {{…}}}}: {e}"),
        )
    })?;
    if !flexcore_contracts::commands::Command::ALL
        .iter()
        .any(|(a, b)| envelope.command.split_once('.') == Some((a, b)))
    {
        return Err(Problem::invalid(
            "/command",
            "unknown command; the contract's commands are listed in docs/messaging.md",
        ));
    }
    let subject = format!("{}.cmd.{}", flexcore_contracts::subjects::ROOT, envelope.command);
    if !flexcore_security::permissions::may_publish(flexcore_security::Role::Gateway, &subject) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{} is sent by FlexCore's own services only, never through the HTTP API",
                envelope.command
            ),
        ));
    }
    let inner = Bytes::copy_from_slice(envelope.body.get().as_bytes());
    let request = Request {
        command: envelope.command,
        needed: ApiRole::Viewer,
        fields: Vec::new(),
        body: &inner,
        success: Success::Ok,
    };
    send(&gateway, &caller, &Method::POST, uri.path(), &headers, request).await
}

/// Refuses a non-empty body that is not JSON by its `Content-Type`.
pub fn json_content(headers: &HeaderMap, body: &[u8]) -> Result<(), Problem> {
    if body.is_empty() {
        return Ok(());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json")) {
        return Ok(());
    }
    Err(Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "the body must be JSON: send Content-Type: application/json",
    ))
}

/// The command id (or another id, by `purpose`) of a request with an `Idempotency-Key`.
fn derived_id(
    caller: &Caller,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    purpose: &str,
) -> Result<Option<Uuid>, Problem> {
    let Some(key) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            Problem::invalid(
                "header:Idempotency-Key",
                format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
            )
        })?;
    let name = format!("{}\n{method} {path}\n{key}\n{purpose}", caller.principal.name);
    Ok(Some(Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes())))
}

/// The `expected_version` of an `If-Match` header.
fn expected_version(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    text.strip_prefix("W/")
        .unwrap_or(text)
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|t| t.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            Problem::invalid(
                "header:If-Match",
                "If-Match must be an ETag this API returned, e.g. \"3\" (the aggregate's version)",
            )
        })
}

/// `body` with `fields` added at the front of its object, unchanged otherwise. A body that
/// is not a JSON object is passed on as sent: the command service says what is wrong.
pub(crate) fn splice(body: &[u8], fields: &[(&'static str, Value)]) -> Result<Bytes, Problem> {
    if body.is_empty() {
        let object: serde_json::Map<String, Value> = fields.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        return Ok(Bytes::from(serde_json::to_vec(&object).unwrap_or_default()));
    }
    let Ok(keys) = serde_json::from_slice::<HashMap<String, serde::de::IgnoredAny>>(body) else {
        return Ok(Bytes::copy_from_slice(body));
    };
    if let Some((field, _)) = fields.iter().find(|(k, _)| keys.contains_key(*k)) {
        let from = match *field {
            "command_id" => "the Idempotency-Key header",
            "expected_version" => "the If-Match header",
            _ => "the path",
        };
        return Err(Problem::invalid(
            format!("/{field}"),
            format!("{field} comes from {from}; leave it out of the body"),
        ));
    }
    if fields.is_empty() {
        return Ok(Bytes::copy_from_slice(body));
    }
    // The object's `{` is the first non-whitespace byte of a body that parsed as an object.
    let open = body.iter().position(|b| *b == b'{').unwrap_or(0);
    let mut spliced = Vec::with_capacity(body.len() + 128);
    spliced.extend_from_slice(&body[..=open]);
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            spliced.push(b',');
        }
        spliced.extend_from_slice(&serde_json::to_vec(key).unwrap_or_default());
        spliced.push(b':');
        spliced.extend_from_slice(&serde_json::to_vec(value).unwrap_or_default());
    }
    if !keys.is_empty() {
        spliced.push(b',');
    }
    spliced.extend_from_slice(&body[open + 1..]);
    Ok(Bytes::from(spliced))
}

/// Sends one command for `caller` and answers as `request.success` says.
pub(crate) async fn send(
    gateway: &Gateway,
    caller: &Caller,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    mut request: Request<'_>,
) -> Result<Response, Problem> {
    let success = std::mem::replace(&mut request.success, Success::Ok);
    let accepted = send_accepted(gateway, caller, method, path, headers, request).await?;
    Ok(answer(&accepted, success))
}

/// Sends one command for `caller`: the command service's accepted reply (the console
/// reads its id and position; `request.success` is not used).
pub(crate) async fn send_accepted(
    gateway: &Gateway,
    caller: &Caller,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    request: Request<'_>,
) -> Result<Accepted, Problem> {
    require(&caller.principal, request.needed, &request.command)?;
    json_content(headers, request.body)?;
    let mut fields = request.fields;
    // A command id the body names is the caller's own: derived under its name, so no
    // caller can take up (and so answer) another's command id.
    let body = own_command_id(caller, request.body)?;
    if let Some(command_id) = derived_id(caller, method, path, headers, "command")? {
        fields.push(("command_id", Value::from(command_id.to_string())));
    } else if body.is_empty() || !body_has(&body, "command_id") {
        fields.push(("command_id", Value::from(Uuid::new_v4().to_string())));
    }
    if let Some(version) = expected_version(headers)? {
        fields.push(("expected_version", Value::from(version)));
    }
    let payload = splice(&body, &fields)?;
    let client = gateway
        .client
        .on_behalf_of(&caller.principal.name, caller.principal.role)
        .map_err(|e| Problem::invalid("", e))?;
    crate::metrics::upstream(client.command_with(
        &request.command,
        payload,
        Some(caller.correlation_id.clone()),
        &Retry::default(),
    ))
    .await
    .map_err(|e| Problem::from_client(&e))
}

/// `body` with its `command_id` (if it names one) replaced by the id derived from it and
/// the caller (UUIDv5), the rest of it unchanged but the order of its top-level keys.
fn own_command_id(caller: &Caller, body: &Bytes) -> Result<Bytes, Problem> {
    if !body_has(body, "command_id") {
        return Ok(body.clone());
    }
    let Ok(mut fields) =
        serde_json::from_slice::<std::collections::BTreeMap<String, Box<serde_json::value::RawValue>>>(body)
    else {
        return Ok(body.clone());
    };
    let given = fields
        .get("command_id")
        .and_then(|v| serde_json::from_str::<Uuid>(v.get()).ok())
        .ok_or_else(|| Problem::invalid("/command_id", "command_id must be a UUID"))?;
    let name = format!("{}\nbody\n{given}", caller.principal.name);
    let own = Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes());
    let own = serde_json::value::to_raw_value(&own.to_string())
        .map_err(|e| Problem::invalid("/command_id", e.to_string()))?;
    fields.insert("command_id".to_owned(), own);
    serde_json::to_vec(&fields)
        .map(Bytes::from)
        .map_err(|e| Problem::invalid("", e.to_string()))
}

/// Whether the JSON object `body` has a top-level `key`.
pub(crate) fn body_has(body: &[u8], key: &str) -> bool {
    serde_json::from_slice::<HashMap<String, serde::de::IgnoredAny>>(body).is_ok_and(|keys| keys.contains_key(key))
}

fn answer(accepted: &Accepted, success: Success) -> Response {
    let (status, location) = match success {
        Success::Ok => (StatusCode::OK, None),
        Success::Created(collection) => (
            StatusCode::CREATED,
            Some(format!(
                "{}/{}/{}",
                super::BASE,
                collection.segment(),
                accepted.aggregate_id
            )),
        ),
        Success::Accepted(location) => (StatusCode::ACCEPTED, Some(location)),
    };
    let mut response = (status, axum::Json(accepted)).into_response();
    let headers = response.headers_mut();
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", accepted.version)) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(POSITION_HEADER, HeaderValue::from(accepted.global_position));
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fields_are_spliced_into_the_object_and_the_rest_is_untouched() {
        let fields = [("pipeline_id", Value::from("p")), ("command_id", Value::from("c"))];
        let spliced = splice(br#" {"n": 12345678901234567890.5, "s":"\u00e9"}"#, &fields).unwrap();
        assert_eq!(
            std::str::from_utf8(&spliced).unwrap(),
            r#" {"pipeline_id":"p","command_id":"c","n": 12345678901234567890.5, "s":"\u00e9"}"#
        );
        assert_eq!(
            &splice(b"{ }", &fields).unwrap()[..],
            br#"{"pipeline_id":"p","command_id":"c" }"#
        );
        assert_eq!(&splice(b"", &fields[..1]).unwrap()[..], br#"{"pipeline_id":"p"}"#);
        // Not an object: passed on for the command service to explain.
        assert_eq!(&splice(b"[1]", &fields).unwrap()[..], b"[1]");
        let repeated = splice(br#"{"pipeline_id":"x"}"#, &fields).unwrap_err();
        assert_eq!(repeated.errors[0].field, "/pipeline_id");
    }

    #[test]
    fn if_match_takes_an_etag() {
        let mut headers = HeaderMap::new();
        assert_eq!(expected_version(&headers).unwrap(), None);
        headers.insert(header::IF_MATCH, HeaderValue::from_static("\"7\""));
        assert_eq!(expected_version(&headers).unwrap(), Some(7));
        headers.insert(header::IF_MATCH, HeaderValue::from_static("W/\"8\""));
        assert_eq!(expected_version(&headers).unwrap(), Some(8));
        headers.insert(header::IF_MATCH, HeaderValue::from_static("7"));
        assert!(expected_version(&headers).is_err());
    }
}
