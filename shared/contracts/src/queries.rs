//! Query requests served by the projection service on `flexcore.qry.<view>.<operation>`.
//!
//! Every query may carry `min_position`: the reply waits (bounded) until the view has
//! processed that global position, so a client can read its own write. Lists are
//! cursor-paginated (`limit` ≤ 1,000).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ErrorBody;

/// Largest page a list query may ask for.
pub const MAX_LIMIT: u32 = 1_000;

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
pub struct ProjectionsQuery {}

/// `projection.rebuild`: replay one projection from the event store into fresh tables
/// and swap them in when caught up; progress shows in `projection.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RebuildRequest {
    /// Projection name (`plugins`, `pipelines`, `runs`, `schedules`, `audit`).
    pub name: String,
}

/// `<view>.list`: a filtered, sorted page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Filter by aggregate state (`active`, `paused`, `running`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Filter by name (plugins, pipelines): exact match, or prefix when it ends in `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Filter by plugin kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Filter by owner (pipelines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Filter by tag (pipelines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Filter by pipeline (runs, schedules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<Uuid>,
    /// Filter by aggregate (events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate_id: Option<Uuid>,
    /// Filter by aggregate type (events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate_type: Option<String>,
    /// Filter by event type (events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    /// Page size (default 100, at most 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Opaque cursor from the previous page's `next_cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Wait until the view has processed this global position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_position: Option<u64>,
}

/// The reply to a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    /// The item (`get`) or items (`list`).
    pub data: serde_json::Value,
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

/// Decodes a query body. An empty body is `{}`. Errors are `validation_failed` with the
/// reason: malformed JSON (line and column), an unknown or missing field, a wrong type.
pub fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, ErrorBody> {
    let value = if payload.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        crate::commands::parse_json(payload)?
    };
    if !value.is_object() {
        return Err(crate::commands::validation(
            "the query body must be a JSON object".into(),
            serde_json::json!({"reason": "not_an_object"}),
        ));
    }
    crate::commands::typed(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn empty_body_is_an_empty_object_and_bad_bodies_are_explained() {
        assert_eq!(decode::<StatsQuery>(b""), Ok(StatsQuery::default()));
        let e = decode::<ListQuery>(b"{\"limit\": \"ten\"}")
            .err()
            .map(|e| (e.code, e.message));
        assert!(
            matches!(e, Some((ErrorCode::ValidationFailed, ref m)) if m.starts_with("limit:")),
            "{e:?}"
        );
        let e = decode::<GetById>(b"{not json").err().map(|e| e.code);
        assert_eq!(e, Some(ErrorCode::ValidationFailed));
        let e = decode::<GetById>(b"[1]").err().map(|e| e.message);
        assert_eq!(e.as_deref(), Some("the query body must be a JSON object"));
        let e = decode::<StatsQuery>(b"{\"bogus\": 1}").err().map(|e| e.code);
        assert_eq!(e, Some(ErrorCode::ValidationFailed));
    }
}
