//! Filtered, sorted, cursor-paginated list queries over a view.

use flexcore_contracts::queries::{ListQuery, SortKey, SortOrder, MAX_LIMIT};
use flexcore_contracts::{ErrorBody, ErrorCode};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 100;

/// How a view can be listed.
#[derive(Debug)]
pub struct ListSpec {
    /// View name in replies and errors (`runs`).
    pub name: &'static str,
    /// SQL view.
    pub view: &'static str,
    /// Key column (tie-breaker of every order) and its SQL type.
    pub key: (&'static str, &'static str),
    /// Column of `sort_by: time` and its type; `since`/`until` apply to it.
    pub time: (&'static str, &'static str),
    /// Column of `sort_by: updated`, if any.
    pub updated: Option<&'static str>,
    /// Column of `sort_by: name`, if any.
    pub name_column: Option<&'static str>,
    /// Column filtered by `since`/`until`.
    pub window: &'static str,
    /// Filters this view accepts (field names of [`ListQuery`]).
    pub filters: &'static [&'static str],
    /// Extra jsonb columns computed per row (`(sql expression over alias v, name)`); each
    /// lands in the row's document under its name for the handler to fold in.
    pub extra: &'static [(&'static str, &'static str)],
}

impl ListSpec {
    /// `, <expr> AS <name>` for every extra column.
    pub fn extra_sql(&self) -> String {
        self.extra
            .iter()
            .map(|(expr, name)| format!(", {expr} AS {name}"))
            .collect()
    }

    /// The row's `doc` with the extra columns added under their names.
    pub fn doc(&self, row: &sqlx::postgres::PgRow) -> Result<serde_json::Value, ErrorBody> {
        let Json(mut doc): Json<serde_json::Value> = row.try_get("doc").map_err(super::db_error)?;
        for (_, name) in self.extra {
            let value: Option<Json<serde_json::Value>> = row.try_get(*name).map_err(super::db_error)?;
            if let (Some(object), Some(Json(value))) = (doc.as_object_mut(), value) {
                object.insert((*name).to_owned(), value);
            }
        }
        Ok(doc)
    }
}

fn invalid(message: String) -> ErrorBody {
    ErrorBody::new(ErrorCode::ValidationFailed, message)
}

/// The filters a query sets, by field name.
fn set_filters(q: &ListQuery) -> Vec<&'static str> {
    let mut set = Vec::new();
    let mut check = |name: &'static str, present: bool| {
        if present {
            set.push(name);
        }
    };
    check("state", q.state.is_some());
    check("name", q.name.is_some());
    check("kind", q.kind.is_some());
    check("owner", q.owner.is_some());
    check("tag", q.tag.is_some());
    check("pipeline_id", q.pipeline_id.is_some());
    check("aggregate_id", q.aggregate_id.is_some());
    check("aggregate_type", q.aggregate_type.is_some());
    check("event_type", q.event_type.is_some());
    check("since", q.since.is_some());
    check("until", q.until.is_some());
    set
}

fn sort_token(key: SortKey, order: SortOrder) -> &'static str {
    match (key, order) {
        (SortKey::Time, SortOrder::Asc) => "ta",
        (SortKey::Time, SortOrder::Desc) => "td",
        (SortKey::Updated, SortOrder::Asc) => "ua",
        (SortKey::Updated, SortOrder::Desc) => "ud",
        (SortKey::Name, SortOrder::Asc) => "na",
        (SortKey::Name, SortOrder::Desc) => "nd",
    }
}

/// An opaque cursor: the sort and the last row's sort value and key.
fn encode_cursor(sort: &str, value: &str, key: &str) -> String {
    hex::encode(format!("{sort}\u{1f}{value}\u{1f}{key}"))
}

fn decode_cursor(cursor: &str, sort: &str) -> Result<(String, String), ErrorBody> {
    let bad =
        || invalid("cursor is not one this service issued; pass next_cursor of the previous page unchanged".into());
    let raw = hex::decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let mut parts = text.split('\u{1f}');
    let (Some(s), Some(value), Some(key), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if s != sort {
        return Err(invalid(
            "cursor belongs to a different sort_by/order; keep them the same while paging".into(),
        ));
    }
    Ok((value.to_owned(), key.to_owned()))
}

/// One page: the rows' `doc`s and the cursor of the next page.
pub async fn page(
    pool: &PgPool,
    spec: &ListSpec,
    q: &ListQuery,
) -> Result<(Vec<serde_json::Value>, Option<String>), ErrorBody> {
    if let Some(extra) = set_filters(q).into_iter().find(|f| !spec.filters.contains(f)) {
        return Err(invalid(format!(
            "filter `{extra}` does not apply to {}; use: {}",
            spec.name,
            spec.filters.join(", ")
        )));
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(invalid(format!("limit must be 1..={MAX_LIMIT}, not {limit}")));
    }
    if let (Some(since), Some(until)) = (q.since, q.until) {
        if until <= since {
            return Err(invalid("until must be after since".into()));
        }
    }
    let (sort_col, sort_type) = match q.sort_by {
        SortKey::Time => spec.time,
        SortKey::Updated => (
            spec.updated
                .ok_or_else(|| invalid(format!("{} cannot be sorted by updated; use time", spec.name)))?,
            "timestamptz",
        ),
        SortKey::Name => (
            spec.name_column
                .ok_or_else(|| invalid(format!("{} cannot be sorted by name; use time", spec.name)))?,
            "text",
        ),
    };
    let (key_col, key_type) = spec.key;
    let sort = sort_token(q.sort_by, q.order);
    let (cmp, dir) = match q.order {
        SortOrder::Asc => (">", "ASC"),
        SortOrder::Desc => ("<", "DESC"),
    };
    let mut b: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT doc, {sort_col}::text AS sort_value, {key_col}::text AS key_value{} FROM {} AS v WHERE true",
        spec.extra_sql(),
        spec.view
    ));
    if let Some(state) = &q.state {
        b.push(" AND state = ").push_bind(state.clone());
    }
    if let Some(name) = &q.name {
        match name.strip_suffix('*') {
            Some(prefix) => b.push(" AND starts_with(name, ").push_bind(prefix.to_owned()).push(")"),
            None => b.push(" AND name = ").push_bind(name.clone()),
        };
    }
    if let Some(kind) = &q.kind {
        b.push(" AND kind = ").push_bind(kind.clone());
    }
    if let Some(owner) = &q.owner {
        b.push(" AND owner = ").push_bind(owner.clone());
    }
    if let Some(tag) = &q.tag {
        b.push(" AND doc->'tags' ? ").push_bind(tag.clone());
    }
    if let Some(id) = q.pipeline_id {
        b.push(" AND pipeline_id = ").push_bind(id);
    }
    if let Some(id) = q.aggregate_id {
        b.push(" AND aggregate_id = ").push_bind(id);
    }
    if let Some(t) = &q.aggregate_type {
        b.push(" AND aggregate_type = ").push_bind(t.clone());
    }
    if let Some(t) = &q.event_type {
        b.push(" AND event_type = ").push_bind(t.clone());
    }
    if let Some(since) = q.since {
        b.push(format!(" AND {} >= ", spec.window)).push_bind(since);
    }
    if let Some(until) = q.until {
        b.push(format!(" AND {} < ", spec.window)).push_bind(until);
    }
    if let Some(cursor) = &q.cursor {
        let (value, key) = decode_cursor(cursor, sort)?;
        b.push(format!(" AND ({sort_col}, {key_col}) {cmp} ("))
            .push_bind(value)
            .push(format!("::{sort_type}, "))
            .push_bind(key)
            .push(format!("::{key_type})"));
    }
    b.push(format!(" ORDER BY {sort_col} {dir}, {key_col} {dir} LIMIT "))
        .push_bind(i64::from(limit) + 1);
    let rows = b.build().fetch_all(pool).await.map_err(super::db_error)?;
    let more = rows.len() > limit as usize;
    let mut docs = Vec::with_capacity(rows.len().min(limit as usize));
    let mut next = None;
    for (i, row) in rows.iter().enumerate().take(limit as usize) {
        docs.push(spec.doc(row)?);
        if more && i + 1 == limit as usize {
            let value: String = row.try_get("sort_value").map_err(super::db_error)?;
            let key: String = row.try_get("key_value").map_err(super::db_error)?;
            next = Some(encode_cursor(sort, &value, &key));
        }
    }
    Ok((docs, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_tampering_or_another_sort() {
        let c = encode_cursor("td", "2026-11-24 10:00:00+00", "abc");
        assert_eq!(
            decode_cursor(&c, "td").ok(),
            Some(("2026-11-24 10:00:00+00".to_owned(), "abc".to_owned()))
        );
        assert!(decode_cursor(&c, "na").is_err());
        assert!(decode_cursor("zz", "td").is_err());
        assert!(decode_cursor(&hex::encode("td\u{1f}x"), "td").is_err());
    }
}
