//! Query requests served by the projection service on `flexcore.qry.<view>.<operation>`.
//!
//! Every query may carry `min_position`: the reply waits (bounded) until the view has
//! processed that global position, so a client can read its own write. Lists are
//! cursor-paginated (`limit` ≤ 1,000).

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::decode::Decoder;
use crate::error::{ErrorBody, ErrorReason};
use crate::opaque::OpaqueJson;
use crate::rules::{MAX_CURSOR_CHARS, MAX_FILTER_CHARS, MAX_PAGE};

/// Largest page a list query may ask for.
pub const MAX_LIMIT: u32 = MAX_PAGE as u32;

/// The projections (`projection.rebuild`'s `name`).
pub const PROJECTIONS: &[&str] = &["plugins", "pipelines", "runs", "schedules", "audit"];

/// `<view>.get`: one item by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetById {
    /// The id.
    pub id: Uuid,
    /// Wait until the view has processed this global position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_position: Option<u64>,
}

/// Sort direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    /// Oldest first.
    Asc,
    /// Newest first.
    #[default]
    Desc,
}

/// What a list is sorted by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    /// Creation (runs: request) time; events: global position.
    #[default]
    Time,
    /// Last change.
    Updated,
    /// Name (plugins and pipelines only).
    Name,
}

/// `stats.get`: system statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Wait until the views have processed this global position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_position: Option<u64>,
}

/// `projection.list`: every projection's position, lag and rebuild progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectionsQuery {
    /// Wait until every projection has processed this global position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_position: Option<u64>,
}

/// `projection.rebuild`: replay one projection from the event store into fresh tables
/// and swap them in when caught up; progress shows in `projection.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RebuildRequest {
    /// Projection name (`plugins`, `pipelines`, `runs`, `schedules`, `audit`).
    #[schemars(extend("enum" = ["plugins", "pipelines", "runs", "schedules", "audit"]))]
    pub name: String,
    /// Wait until the projection has processed this global position before rebuilding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_position: Option<u64>,
}

/// `<view>.list`: a filtered, sorted page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Filter by aggregate state (`active`, `paused`, `running`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_FILTER_CHARS))]
    pub state: Option<String>,
    /// Filter by name (plugins, pipelines): exact match, or prefix when it ends in `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_FILTER_CHARS))]
    pub name: Option<String>,
    /// Filter by plugin kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_FILTER_CHARS))]
    pub kind: Option<String>,
    /// Filter by owner (pipelines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_FILTER_CHARS))]
    pub owner: Option<String>,
    /// Filter by tag (pipelines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_FILTER_CHARS))]
    pub tag: Option<String>,
    /// Filter by id prefix (plugins, pipelines, runs, schedules): lowercase hex digits of
    /// the id without hyphens, e.g. `01a24157ab`; a range on the id, so it is cheap for
    /// any number of items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[0-9a-f]{1,32}$"))]
    pub id_prefix: Option<String>,
    /// Filter by pipeline (runs, schedules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<Uuid>,
    /// Filter by aggregate (events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate_id: Option<Uuid>,
    /// Filter by aggregate type (events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_FILTER_CHARS))]
    pub aggregate_type: Option<String>,
    /// Filter by event type (events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_FILTER_CHARS))]
    pub event_type: Option<String>,
    /// Only items at or after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Only items before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// What to sort by (default `time`: creation or request time; events by position).
    #[serde(default)]
    pub sort_by: SortKey,
    /// Sort direction (default newest first).
    #[serde(default)]
    pub order: SortOrder,
    /// Page size (default 100, at most 1,000). A page may hold fewer items than asked
    /// when they would not fit in one reply; `next_cursor` then continues after them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_PAGE))]
    pub limit: Option<u32>,
    /// Opaque cursor from the previous page's `next_cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_CURSOR_CHARS), regex(pattern = r"^[0-9a-f]*$"))]
    pub cursor: Option<String>,
    /// Wait until the view has processed this global position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_position: Option<u64>,
}

/// The reply to a query.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum QueryReply {
    /// The answer.
    Ok(QueryOk),
    /// A refusal (`validation_failed`, `not_found`, `stale`, …).
    Err(QueryErr),
}

/// A successful query reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryOk {
    /// Always `true`.
    pub ok: bool,
    /// The item (`get`) or items (`list`), with client data exactly as written.
    pub data: OpaqueJson,
    /// Cursor of the next page, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The global position the view had processed when it answered.
    pub position: u64,
}

/// A refused query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryErr {
    /// Always `false`.
    pub ok: bool,
    /// Why.
    pub error: ErrorBody,
}

impl<'de> Deserialize<'de> for QueryReply {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Not derived: an untagged enum buffers its input, which would lose `data`'s text.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Any {
            ok: bool,
            #[serde(default)]
            data: Option<OpaqueJson>,
            #[serde(default)]
            next_cursor: Option<String>,
            #[serde(default)]
            position: Option<u64>,
            #[serde(default)]
            error: Option<ErrorBody>,
        }
        let any = Any::deserialize(deserializer)?;
        match (any.ok, any.data, any.position, any.error) {
            (true, Some(data), Some(position), None) => Ok(Self::Ok(QueryOk {
                ok: true,
                data,
                next_cursor: any.next_cursor,
                position,
            })),
            (false, None, None, Some(error)) => Ok(Self::Err(QueryErr { ok: false, error })),
            _ => Err(serde::de::Error::custom(
                "a query reply is {\"ok\":true,\"data\",\"position\"} or {\"ok\":false,\"error\"}",
            )),
        }
    }
}

/// Every query this contract defines, as `<view>.<operation>` (the subject's last tokens).
pub const ALL: &[&str] = &[
    "plugin.get",
    "plugin.list",
    "plugin.stats",
    "pipeline.get",
    "pipeline.list",
    "run.get",
    "run.list",
    "schedule.get",
    "schedule.list",
    "event.list",
    "stats.get",
    "projection.list",
    "projection.rebuild",
];

/// The filters (fields of [`ListQuery`]) and sort keys each `<view>.list` accepts.
pub fn list_rules(view: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    Some(match view {
        "plugin" => (
            &["state", "name", "kind", "id_prefix", "since", "until"],
            &["time", "updated", "name"],
        ),
        "pipeline" => (
            &["state", "name", "owner", "tag", "id_prefix", "since", "until"],
            &["time", "updated", "name"],
        ),
        "run" => (
            &["state", "pipeline_id", "id_prefix", "since", "until"],
            &["time", "updated"],
        ),
        "schedule" => (
            &["state", "pipeline_id", "id_prefix", "since", "until"],
            &["time", "updated"],
        ),
        "event" => (
            &["aggregate_id", "aggregate_type", "event_type", "since", "until"],
            &["time"],
        ),
        _ => return None,
    })
}

/// Fields of [`ListQuery`] that every list accepts.
const LIST_COMMON: &[&str] = &["sort_by", "order", "limit", "cursor", "min_position"];

/// The body schema of `<view>.list`: [`ListQuery`] with only the filters and sort keys
/// that view has, so a filter a view does not have is an unknown field.
fn list_schema(view: &str) -> schemars::Schema {
    let mut schema = crate::schema::schema_for::<ListQuery>();
    let Some((filters, sorts)) = list_rules(view) else {
        return schema;
    };
    if let Some(props) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
        props.retain(|name, _| filters.contains(&name.as_str()) || LIST_COMMON.contains(&name.as_str()));
        if let Some(sort) = props.get_mut("sort_by").and_then(|s| s.as_object_mut()) {
            sort.remove("$ref");
            sort.insert("type".into(), "string".into());
            sort.insert(
                "enum".into(),
                sorts.iter().map(|s| serde_json::Value::from(*s)).collect(),
            );
        }
    }
    schema.insert(
        "title".into(),
        format!("{}ListQuery", view[..1].to_uppercase() + &view[1..]).into(),
    );
    if let Some(defs) = schema.get_mut("$defs").and_then(|d| d.as_object_mut()) {
        defs.remove("SortKey");
        if defs.is_empty() {
            schema.remove("$defs");
        }
    }
    schema
}

/// Every query body's schema by query name (`run.list`, …; the files under `schemas/queries/`).
pub fn schemas() -> Vec<(String, schemars::Schema)> {
    use crate::schema::schema_for;
    ALL.iter()
        .map(|name| {
            let (view, operation) = name.split_once('.').unwrap_or((name, ""));
            let schema = match (view, operation) {
                ("stats", _) => schema_for::<StatsQuery>(),
                ("projection", "list") => schema_for::<ProjectionsQuery>(),
                ("projection", _) => schema_for::<RebuildRequest>(),
                (_, "get") | ("plugin", "stats") => schema_for::<GetById>(),
                (view, _) => list_schema(view),
            };
            ((*name).to_owned(), schema)
        })
        .collect()
}

/// The compiled schema of query `name` (see [`schemas`]), compiled once per process.
pub fn decoder(name: &str) -> Result<&'static Decoder, ErrorBody> {
    static DECODERS: OnceLock<HashMap<String, Result<Decoder, String>>> = OnceLock::new();
    let all = DECODERS.get_or_init(|| {
        schemas()
            .into_iter()
            .map(|(name, schema)| (name, Decoder::new(schema)))
            .collect()
    });
    match all.get(name) {
        Some(Ok(decoder)) => Ok(decoder),
        Some(Err(e)) => Err(ErrorBody::new(
            ErrorReason::Internal,
            format!("the schema of query {name} does not compile: {e}"),
        )),
        None => Err(ErrorBody::new(
            ErrorReason::UnknownSubject,
            format!("{name} is not a query; the queries are: {}", ALL.join(", ")),
        )),
    }
}

/// Decodes the body of query `name` (`run.list`; see [`crate::decode`]). An empty body is
/// `{}`. Errors are `validation_failed` saying which rule failed and where.
pub fn decode<T: serde::de::DeserializeOwned>(name: &str, payload: &[u8]) -> Result<T, ErrorBody> {
    let payload: &[u8] = if payload.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        payload
    };
    decoder(name)?.decode(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn empty_body_is_an_empty_object_and_bad_bodies_are_explained() {
        assert_eq!(decode::<StatsQuery>("stats.get", b""), Ok(StatsQuery::default()));
        let e = decode::<ListQuery>("run.list", b"{\"limit\": \"ten\"}").err();
        assert_eq!(e.as_ref().map(|e| e.details.path.as_deref()), Some(Some("/limit")));
        let e = decode::<GetById>("run.get", b"{not json").err().map(|e| e.code);
        assert_eq!(e, Some(ErrorCode::ValidationFailed));
        let e = decode::<GetById>("run.get", b"[1]").err().map(|e| e.details.reason);
        assert_eq!(e, Some(ErrorReason::NotAnObject));
        let e = decode::<StatsQuery>("stats.get", b"{\"bogus\": 1}")
            .err()
            .map(|e| e.details.reason);
        assert_eq!(e, Some(ErrorReason::UnknownField));
        let e = decode::<ListQuery>("plugin.list", br#"{"kind":"\u0000"}"#)
            .err()
            .map(|e| e.details.reason);
        assert_eq!(e, Some(ErrorReason::InvalidCharacter));
        for limit in ["0", "1001", "1.5"] {
            let body = format!(r#"{{"limit":{limit}}}"#);
            assert!(decode::<ListQuery>("run.list", body.as_bytes()).is_err(), "{limit}");
        }
        assert_eq!(
            decode::<ListQuery>("run.list", br#"{"limit":1e3}"#).map(|q| q.limit),
            Ok(Some(1000))
        );
        let e = decode::<ListQuery>("run.list", br#"{"kind":"loader"}"#)
            .err()
            .map(|e| e.details.reason);
        assert_eq!(e, Some(ErrorReason::UnknownField));
        let e = decode::<ListQuery>("run.list", br#"{"sort_by":"name"}"#)
            .err()
            .map(|e| e.details.path);
        assert_eq!(e, Some(Some("/sort_by".into())));
        let spaced = decode::<ListQuery>("run.list", br#"{"since":" 2026-01-01T00:00:00Z"}"#).err();
        assert_eq!(spaced.map(|e| e.details.path), Some(Some("/since".into())));
        assert!(decode::<ProjectionsQuery>("projection.list", br#"{"min_position":5}"#).is_ok());
    }

    #[test]
    fn replies_keep_data_exactly() {
        let text = r#"{"ok":true,"data":[{"b":0.10,"a":1}],"position":3}"#;
        let reply: QueryReply = serde_json::from_str(text).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(serde_json::to_string(&reply).ok().as_deref(), Some(text));
        let err: Result<QueryReply, _> = serde_json::from_str(r#"{"ok":true}"#);
        assert!(err.is_err());
    }
}
