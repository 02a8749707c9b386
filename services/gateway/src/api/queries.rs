//! Queries: `GET` of an item or a list, answered by the projection service's views.
//!
//! - Read your own writes: `Consistency-Position: <n>` (or `?min_position=<n>`) makes the
//!   view answer only once it has processed global position `n` (the `Consistency-Position`
//!   a command returned); 503 `stale` with `Retry-After` if it does not within its bound.
//!   Every answer carries the position it reflects in `Consistency-Position`.
//! - Items carry their `aggregate_version` as `ETag` (send it back in `If-Match` to change them).
//! - Lists take the view's filters, `sort_by`, `order`, `limit` (≤ 1000) and `cursor` as
//!   query parameters and answer `{"items": […], "next_cursor": …, "position": n}` with a
//!   `Link: <…>; rel="next"` while there is more.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use flexcore_client::Retry;
use flexcore_contracts::queries::QueryOk;
use flexcore_security::ApiRole;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{parse_id, require, Collection};
use crate::problem::Problem;
use crate::{Caller, Gateway, POSITION_HEADER};

/// The list parameters that are numbers.
const NUMERIC: [&str; 2] = ["limit", "min_position"];

/// The `Consistency-Position` header, if any.
pub fn position_header(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    headers
        .get(POSITION_HEADER)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Problem::invalid(
                        format!("header:{POSITION_HEADER}"),
                        "Consistency-Position must be a global position (a non-negative integer)",
                    )
                })
        })
        .transpose()
}

/// Sends query `name` with `body` for `caller`.
pub async fn ask(gateway: &Gateway, name: &str, body: &Value) -> Result<QueryOk, Problem> {
    crate::metrics::upstream(gateway.client.query_raw(name, body, &Retry::attempts(2)))
        .await
        .map_err(|e| Problem::from_client(&e))
}

/// The answer to a query: `data` as the view wrote it, the position, the ETag.
fn item(ok: &QueryOk) -> Response {
    let mut response = (StatusCode::OK, ok.data.as_str().to_owned()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(POSITION_HEADER, HeaderValue::from(ok.position));
    let version = serde_json::from_str::<VersionOnly>(ok.data.as_str())
        .ok()
        .and_then(|v| v.aggregate_version);
    if let Some(etag) = version.and_then(|v| HeaderValue::from_str(&format!("\"{v}\"")).ok()) {
        headers.insert(header::ETAG, etag);
    }
    response
}

#[derive(Deserialize)]
struct VersionOnly {
    #[serde(default)]
    aggregate_version: Option<u64>,
}

/// `GET /<collection>/{id}` (`?min_position=` or `Consistency-Position`).
pub async fn get(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    require(&caller.principal, ApiRole::Viewer, "reading")?;
    let collection = Collection::of_path(uri.path()).ok_or_else(|| Problem::no_route(uri.path()))?;
    let body = item_body(parse_id(collection, &id)?, query.as_deref(), &headers)?;
    let ok = ask(&gateway, &format!("{}.get", collection.aggregate()), &body).await?;
    Ok(item(&ok))
}

/// `GET /plugins/{id}/status`: `plugin.stats`, the plugin's runs by state with their
/// average durations.
pub async fn plugin_status(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    require(&caller.principal, ApiRole::Viewer, "reading")?;
    let body = item_body(parse_id(Collection::Plugins, &id)?, query.as_deref(), &headers)?;
    let ok = ask(&gateway, "plugin.stats", &body).await?;
    Ok(item(&ok))
}

/// The body of a query for one item: its id, and `min_position` from the query string or
/// the `Consistency-Position` header.
fn item_body(id: uuid::Uuid, query: Option<&str>, headers: &HeaderMap) -> Result<Value, Problem> {
    let mut body = serde_json::json!({ "id": id });
    for (key, value) in form_pairs(query.unwrap_or("")) {
        if key != "min_position" {
            return Err(Problem::invalid(
                format!("query:{key}"),
                "unknown parameter: an item takes min_position (or the Consistency-Position header)",
            ));
        }
        let position = value.parse::<u64>().map_err(|_| {
            Problem::invalid(
                "query:min_position",
                "min_position must be a global position (a non-negative integer)",
            )
        })?;
        body["min_position"] = position.into();
    }
    if let Some(position) = position_header(headers)? {
        body["min_position"] = position.into();
    }
    Ok(body)
}

/// The list query of a query string: every parameter a string, the numeric ones numbers
/// when they are digits (anything else is passed on for the view to refuse by name).
fn list_body(query: Option<&str>, headers: &HeaderMap) -> Result<Map<String, Value>, Problem> {
    let mut body = Map::new();
    for (key, value) in form_pairs(query.unwrap_or("")) {
        if body.contains_key(&key) {
            return Err(Problem::invalid(
                format!("query:{key}"),
                format!("{key} is given twice"),
            ));
        }
        let value = if NUMERIC.contains(&key.as_str()) {
            value.parse::<u64>().map_or(Value::String(value), Value::from)
        } else {
            Value::String(value)
        };
        body.insert(key, value);
    }
    if let Some(position) = position_header(headers)? {
        body.insert("min_position".to_owned(), position.into());
    }
    Ok(body)
}

/// `application/x-www-form-urlencoded` pairs (percent-decoded, `+` as space).
pub fn form_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                    out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The query string of the next page: this one with `cursor` replaced.
fn next_query(query: Option<&str>, cursor: &str) -> String {
    let mut parts: Vec<String> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("cursor="))
        .map(str::to_owned)
        .collect();
    parts.push(format!("cursor={cursor}"));
    parts.join("&")
}

/// A list answer.
fn page(ok: &QueryOk, path: &str, query: Option<&str>) -> Response {
    let cursor = ok
        .next_cursor
        .as_deref()
        .map_or_else(|| "null".to_owned(), |c| serde_json::to_string(c).unwrap_or_default());
    let body = format!(
        "{{\"items\":{},\"next_cursor\":{cursor},\"position\":{}}}",
        ok.data.as_str(),
        ok.position
    );
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(POSITION_HEADER, HeaderValue::from(ok.position));
    if let Some(next) = &ok.next_cursor {
        // Cursors are hex (the contract's pattern): safe in a URL and a header as they are.
        if let Ok(link) = HeaderValue::from_str(&format!("<{path}?{}>; rel=\"next\"", next_query(query, next))) {
            headers.insert(header::LINK, link);
        }
    }
    response
}

/// `GET /<collection>`: a page of the view.
pub async fn list(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    OriginalUri(uri): OriginalUri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    require(&caller.principal, ApiRole::Viewer, "reading")?;
    let collection = Collection::of_path(uri.path()).ok_or_else(|| Problem::no_route(uri.path()))?;
    let body = list_body(query.as_deref(), &headers)?;
    let ok = ask(
        &gateway,
        &format!("{}.list", collection.aggregate()),
        &Value::Object(body),
    )
    .await
    .map_err(|mut problem| {
        // The view names a parameter by its JSON pointer; here it is a query parameter.
        for error in &mut problem.errors {
            if let Some(name) = error.field.strip_prefix('/') {
                error.field = format!("query:{name}");
            }
        }
        problem
    })?;
    Ok(page(&ok, uri.path(), query.as_deref()))
}

/// The body of `POST /queries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    /// `run.list`, …
    query: String,
    /// The query's body.
    #[serde(default)]
    body: Option<Value>,
}

/// `POST /queries`: `{"query": "<view>.<operation>", "body": {…}}` → the contract's reply.
pub async fn generic(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    super::commands::json_content(&headers, &body)?;
    let envelope: Envelope = serde_json::from_slice(&body).map_err(|e| {
        Problem::invalid(
            "",
            format!("the body must be {{\"query\": \"<view>.<operation>\", \"body\": {{…}}}}: {e}"),
        )
    })?;
    if !flexcore_contracts::queries::ALL.contains(&envelope.query.as_str()) {
        return Err(Problem::invalid(
            "/query",
            format!("unknown query; one of {}", flexcore_contracts::queries::ALL.join(", ")),
        ));
    }
    let needed = if envelope.query == "projection.rebuild" {
        ApiRole::Admin
    } else {
        ApiRole::Viewer
    };
    require(&caller.principal, needed, &envelope.query)?;
    let body = envelope.body.unwrap_or_else(|| Value::Object(Map::new()));
    let ok = ask(&gateway, &envelope.query, &body).await?;
    let mut response = axum::Json(&ok).into_response();
    response
        .headers_mut()
        .insert(POSITION_HEADER, HeaderValue::from(ok.position));
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn query_strings_become_list_queries() {
        let body = list_body(Some("state=active&limit=5&name=a%2Ab+c&cursor=00ff"), &HeaderMap::new()).unwrap();
        assert_eq!(
            Value::Object(body),
            serde_json::json!({"state":"active","limit":5,"name":"a*b c","cursor":"00ff"})
        );
        let body = list_body(Some("limit=ten"), &HeaderMap::new()).unwrap();
        assert_eq!(body["limit"], "ten", "passed on for the view to refuse");
        assert!(list_body(Some("state=a&state=b"), &HeaderMap::new()).is_err());
        assert_eq!(next_query(Some("state=a&cursor=01"), "02"), "state=a&cursor=02");
        assert_eq!(
            form_pairs("a=%zz&b=%4&c=%+5"),
            [
                ("a".into(), "%zz".into()),
                ("b".into(), "%4".into()),
                ("c".into(), "% 5".into())
            ]
        );
    }
}
