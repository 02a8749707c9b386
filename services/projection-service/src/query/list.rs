//! Filtered, sorted, cursor-paginated list queries over a view. Which filters and sort
//! keys a view has is the contract's (`queries::list_rules`), checked by the query's
//! schema before a list is built.

use chrono::{DateTime, SecondsFormat, Utc};
use flexcore_contracts::queries::{ListQuery, SortKey, SortOrder, MAX_LIMIT};
use flexcore_contracts::{ErrorBody, ErrorReason};
use sqlx::postgres::PgRow;
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
    /// Extra columns computed per row (`, <expr> AS x_…`, over alias `v`), for the handler
    /// to fold into the row's document; named `x_…` so that the filters' bare column names
    /// stay the view's.
    pub extra: &'static str,
}

/// One listed item: its document (exact text) and the cursor that continues after it.
#[derive(Debug, Clone)]
pub struct Item<E = ()> {
    /// The document's text exactly as stored: a `json` column, so valid JSON (Postgres
    /// checks the text on input) and written into the reply as it is, not parsed again.
    pub doc: String,
    /// The extra columns, as the handler decoded them.
    pub extra: E,
    /// The cursor of the rows after this one.
    pub cursor: Cursor,
}

/// The cursor after a row: its sort value and key as read (binary, not text), encoded
/// only when a reply carries it ([`Cursor::text`]): a page shows one cursor, that of the
/// last item it holds, so formatting one per row was work thrown away.
#[derive(Debug, Clone)]
pub struct Cursor {
    sort: &'static str,
    value: Bound,
    key: Bound,
}

/// A sort value or key, as its column's type.
#[derive(Debug, Clone)]
enum Bound {
    Time(DateTime<Utc>),
    Int(i64),
    Id(uuid::Uuid),
    Text(String),
}

impl Bound {
    /// The column `name` of `row`, of SQL type `ty` (`timestamptz`, `bigint`, `uuid`, `text`).
    fn read(row: &PgRow, name: &str, ty: &str) -> Result<Self, sqlx::Error> {
        Ok(match ty {
            "timestamptz" => Self::Time(row.try_get(name)?),
            "bigint" => Self::Int(row.try_get(name)?),
            "uuid" => Self::Id(row.try_get(name)?),
            _ => Self::Text(row.try_get(name)?),
        })
    }

    /// Text the column's type casts back to the same value (a time to the microsecond,
    /// Postgres' precision).
    fn text(&self) -> String {
        match self {
            Self::Time(t) => t.to_rfc3339_opts(SecondsFormat::Micros, true),
            Self::Int(n) => n.to_string(),
            Self::Id(id) => id.to_string(),
            Self::Text(text) => text.clone(),
        }
    }
}

impl Cursor {
    /// The opaque text a reply carries (`next_cursor`) and a query passes back (`cursor`).
    pub fn text(&self) -> String {
        encode_cursor(self.sort, &self.value.text(), &self.key.text())
    }
}

/// A page of items, and whether rows follow it.
#[derive(Debug, Clone)]
pub struct Page<E = ()> {
    /// The items, in order.
    pub items: Vec<Item<E>>,
    /// More rows follow the last item.
    pub more: bool,
}

impl<E> Default for Page<E> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            more: false,
        }
    }
}

impl ListSpec {
    /// `SELECT doc::text AS doc<extra> FROM <view> AS v`: the document's text as stored
    /// (`json` keeps it exactly), without a round trip through a JSON parser.
    pub fn select(&self, columns: &str) -> String {
        format!(
            "SELECT v.doc::text AS doc{columns}{} FROM {} AS v",
            self.extra, self.view
        )
    }
}

/// A row's document text.
pub fn doc(row: &sqlx::postgres::PgRow) -> Result<String, ErrorBody> {
    row.try_get("doc").map_err(super::db_error)
}

fn not_applicable(path: &str, message: String) -> ErrorBody {
    ErrorBody::at(ErrorReason::NotApplicable, path, message)
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

fn forged_cursor() -> ErrorBody {
    not_applicable(
        "/cursor",
        "cursor is not one this service issued; pass next_cursor of the previous page unchanged".into(),
    )
}

/// Whether the database refused a value (SQLSTATE class 22, data exception). A cursor's
/// sort value and key reach the database as text cast to their columns' types, so a
/// cursor this service did not issue can hold one that does not cast (`not a time`, a key
/// that is no UUID, U+0000): it is refused as a cursor, not answered `internal`.
fn is_data_exception(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().is_some_and(|code| code.starts_with("22")))
}

fn decode_cursor(cursor: &str, sort: &str) -> Result<(String, String), ErrorBody> {
    let bad = forged_cursor;
    let raw = hex::decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let mut parts = text.split('\u{1f}');
    let (Some(s), Some(value), Some(key), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if s != sort {
        return Err(not_applicable(
            "/cursor",
            "cursor belongs to a different sort_by/order; keep them the same while paging".into(),
        ));
    }
    Ok((value.to_owned(), key.to_owned()))
}

/// The ids starting with `prefix` (hex digits of an id without hyphens) as the range of
/// ids from the lowest to the highest with that prefix: UUIDs order as their bytes, so an
/// index on the id answers it, however many rows there are.
pub fn id_range(prefix: &str) -> Result<(uuid::Uuid, uuid::Uuid), ErrorBody> {
    let bad = || {
        ErrorBody::at(
            ErrorReason::InvalidValue,
            "/id_prefix",
            format!("id_prefix {prefix:?} is not 1 to 32 lowercase hex digits (an id's start, without hyphens)"),
        )
    };
    if prefix.is_empty() || prefix.len() > 32 || !prefix.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad());
    }
    let pad = |fill: char| {
        let text: String = prefix.chars().chain(std::iter::repeat(fill)).take(32).collect();
        uuid::Uuid::parse_str(&text).map_err(|_| bad())
    };
    Ok((pad('0')?, pad('f')?))
}

/// One page: up to `limit` rows' documents, each with the cursor after it and its extra
/// columns as `extra` decodes them.
pub async fn page<E>(
    pool: &PgPool,
    spec: &ListSpec,
    q: &ListQuery,
    extra: impl Fn(&PgRow) -> Result<E, ErrorBody>,
) -> Result<Page<E>, ErrorBody> {
    // The schema bounds it to 1..=1000.
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let (sort_col, sort_type) = match q.sort_by {
        SortKey::Time => spec.time,
        SortKey::Updated => (
            spec.updated.ok_or_else(|| {
                not_applicable(
                    "/sort_by",
                    format!("{} cannot be sorted by updated; use time", spec.name),
                )
            })?,
            "timestamptz",
        ),
        SortKey::Name => (
            spec.name_column.ok_or_else(|| {
                not_applicable("/sort_by", format!("{} cannot be sorted by name; use time", spec.name))
            })?,
            "text",
        ),
    };
    let (key_col, key_type) = spec.key;
    let sort = sort_token(q.sort_by, q.order);
    let (cmp, dir) = match q.order {
        SortOrder::Asc => (">", "ASC"),
        SortOrder::Desc => ("<", "DESC"),
    };
    // Typed, not `::text`: Postgres would format a time and a UUID for every row, of which
    // only the last shown becomes a cursor (`Cursor::text`).
    let mut b: QueryBuilder<Postgres> =
        QueryBuilder::new(spec.select(&format!(", v.{sort_col} AS sort_value, v.{key_col} AS key_value")));
    b.push(" WHERE true");
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
        b.push(" AND (doc->'tags')::jsonb ? ").push_bind(tag.clone());
    }
    if let Some(prefix) = &q.id_prefix {
        let (low, high) = id_range(prefix)?;
        b.push(format!(" AND {} BETWEEN ", spec.key.0))
            .push_bind(low)
            .push(" AND ")
            .push_bind(high);
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
    let rows = b.build().fetch_all(pool).await.map_err(|e| match &q.cursor {
        Some(_) if is_data_exception(&e) => forged_cursor(),
        _ => super::db_error(e),
    })?;
    let more = rows.len() > limit as usize;
    let mut items = Vec::with_capacity(rows.len().min(limit as usize));
    for row in rows.iter().take(limit as usize) {
        let cursor = Cursor {
            sort,
            value: Bound::read(row, "sort_value", sort_type).map_err(super::db_error)?,
            key: Bound::read(row, "key_value", key_type).map_err(super::db_error)?,
        };
        items.push(Item {
            doc: doc(row)?,
            extra: extra(row)?,
            cursor,
        });
    }
    Ok(Page { items, more })
}

// Test code from here on: the messaging doc's scan of the service's error reasons stops
// at the first `#[cfg(test)]`.
#[cfg(test)]
impl Cursor {
    /// The cursor after the `events` row at global position `position`.
    pub fn of_position(position: i64) -> Self {
        Self {
            sort: "ta",
            value: Bound::Int(position),
            key: Bound::Int(position),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_prefix_is_the_range_of_ids_that_start_with_it() {
        let (low, high) = id_range("01a24157ab").unwrap();
        assert_eq!(low.to_string(), "01a24157-ab00-0000-0000-000000000000");
        assert_eq!(high.to_string(), "01a24157-abff-ffff-ffff-ffffffffffff");
        let full = "0190a0000000700080000000000000aa";
        assert_eq!(id_range(full).unwrap(), (full.parse().unwrap(), full.parse().unwrap()));
        for bad in ["", "01A2", "01a2-41", "xyz", &"0".repeat(33)] {
            let error = id_range(bad).unwrap_err();
            assert_eq!(error.details.reason, ErrorReason::InvalidValue, "{bad:?}");
        }
    }

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

    #[test]
    fn a_cursor_s_values_are_text_their_columns_cast_back_exactly() {
        let time: DateTime<Utc> = "2026-11-24T10:00:00.000120Z".parse().unwrap();
        let id = uuid::Uuid::parse_str("0190a000-0000-7000-8000-0000000000aa").unwrap();
        let cursor = Cursor {
            sort: "td",
            value: Bound::Time(time),
            key: Bound::Id(id),
        };
        let (value, key) = decode_cursor(&cursor.text(), "td").unwrap();
        assert_eq!(value, "2026-11-24T10:00:00.000120Z");
        assert_eq!(value.parse::<DateTime<Utc>>().unwrap(), time);
        assert_eq!(key, id.to_string());
        let by_name = Cursor {
            sort: "na",
            value: Bound::Text("a\u{1f}b".into()),
            key: Bound::Int(-7),
        };
        assert!(
            decode_cursor(&by_name.text(), "na").is_err(),
            "a separator in a name is refused, as before"
        );
        let events = Cursor {
            sort: "ta",
            value: Bound::Int(42),
            key: Bound::Int(42),
        };
        assert_eq!(
            decode_cursor(&events.text(), "ta").unwrap(),
            ("42".to_owned(), "42".to_owned())
        );
    }
}
