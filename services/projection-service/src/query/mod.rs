//! The query API: a queue-group subscription on `flexcore.qry.>`, a typed reply for every
//! request (never silence), and read-your-writes through `min_position`.
//!
//! Views and operations:
//! - `plugin|pipeline|run|schedule` `.get` ([`GetById`]) and `.list` ([`ListQuery`]);
//! - `event.list` (the audit log; [`ListQuery`] with aggregate/type/time filters);
//! - `plugin.stats` ([`GetById`]: a plugin's runs by state and average duration);
//! - `stats.get` ([`StatsQuery`]);
//! - `projection.list` (positions, lag, rebuild progress) and `projection.rebuild`.

mod batch;
mod cache;
mod list;
mod upcoming;
mod views;

use std::sync::Arc;

use async_nats::{Client, Message};
use chrono::{DateTime, Utc};
use flexcore_contracts::queries::{
    self, GetById, ListQuery, ProjectionsQuery, QueryErr, QueryReply, RebuildRequest, StatsQuery,
};
use flexcore_contracts::{subjects, ErrorBody, ErrorReason};
use flexcore_telemetry::propagation;
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::positions::{checkpoint, Positions};
use crate::projection::Kind;

pub use cache::PageCache;
pub use list::{Cursor, Item, ListSpec, Page, DEFAULT_LIMIT};

/// What query handlers share.
pub struct QueryContext {
    /// The read models (and, unless `separate_log`, the event log).
    pub pool: PgPool,
    /// The event store when it is another database than `pool` (read-only), for
    /// positions and lag; see [`crate::Databases`].
    pub separate_log: Option<PgPool>,
    /// Where each projection stands.
    pub positions: Arc<Positions>,
    /// Tuning.
    pub settings: flexcore_config::ProjectionSettings,
    /// The next schedule fires, kept between queries.
    pub upcoming: upcoming::Upcoming,
    /// Recent list pages.
    pub pages: PageCache,
}

impl QueryContext {
    /// The event store.
    pub fn log(&self) -> &PgPool {
        self.separate_log.as_ref().unwrap_or(&self.pool)
    }
}

/// Every query subject this service answers, for error messages.
pub const KNOWN: &[&str] = queries::ALL;

/// Room in a reply for everything besides `data`: `{"ok":true,"data":…,"next_cursor":…,
/// "position":…}` with the longest cursor.
const REPLY_OVERHEAD: usize = 4096;

/// Serves queries until `shutdown`, then drains and waits (bounded) for those in flight.
pub async fn serve(client: Client, ctx: Arc<QueryContext>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let limits = flexcore_service::ServeLimits {
        max_in_flight: ctx.settings.max_in_flight,
        shutdown_grace: ctx.settings.shutdown_grace,
    };
    let replies = client.clone();
    let gets = Arc::new(batch::Gets::start(&ctx.pool));
    flexcore_service::serve(
        client,
        subjects::QUERIES_WILDCARD,
        subjects::QUERY_QUEUE_GROUP,
        "queries",
        limits,
        shutdown,
        move |message| {
            let (client, ctx, gets) = (replies.clone(), ctx.clone(), gets.clone());
            async move { handle(&client, &ctx, &gets, message).await }
        },
    )
    .await
}

async fn handle(client: &Client, ctx: &QueryContext, gets: &batch::Gets, message: Message) {
    let Some(reply_to) = message.reply.clone() else {
        tracing::debug!(subject = %message.subject, "query without a reply subject dropped: send it as a request");
        return;
    };
    // Only worth a span while spans are exported: a child of the sender's (its
    // `traceparent` header), else a new trace.
    let span = if propagation::enabled() {
        let span = tracing::info_span!("query", subject = %message.subject);
        propagation::set_parent(&span, message.headers.as_ref());
        span
    } else {
        tracing::Span::none()
    };
    let limit = client.max_payload();
    let body = match answer(ctx, gets, &message, limit).instrument(span).await {
        Ok(answer) => {
            crate::metrics::record_query_status(message.subject.as_str(), "ok");
            answer.encode()
        }
        Err(error) => {
            let reply = QueryReply::Err(QueryErr { ok: false, error });
            crate::metrics::record_query(message.subject.as_str(), &reply);
            serde_json::to_vec(&reply).unwrap_or_else(|e| {
                flexcore_service::reply::error_body(&ErrorBody::new(
                    ErrorReason::Internal,
                    format!("reply encoding failed: {e}"),
                ))
            })
        }
    };
    flexcore_service::reply::send(client, reply_to, body, crate::SERVICE).await;
}

/// A successful query's reply (the contract's `QueryOk`), written without a JSON
/// serialiser: `data` is JSON text taken as it is, documents from the read models' `json`
/// columns (Postgres accepts only valid JSON into them) with fields serialised here
/// appended, so that the reply never parses and re-encodes what Postgres already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The item (`get`) or items (`list`): one JSON value's text.
    pub data: String,
    /// Cursor of the next page, when there is one.
    pub next_cursor: Option<String>,
    /// The global position the view had processed when it answered.
    pub position: u64,
}

impl Answer {
    /// `{"ok":true,"data":…,"next_cursor":…,"position":…}`, byte for byte what
    /// `serde_json::to_vec(&QueryReply::Ok(QueryOk { … }))` writes.
    pub fn encode(&self) -> Vec<u8> {
        let cursor = self.next_cursor.as_ref().map_or(0, |c| c.len() + 20);
        let mut out = Vec::with_capacity(self.data.len() + cursor + 48);
        out.extend_from_slice(b"{\"ok\":true,\"data\":");
        out.extend_from_slice(self.data.as_bytes());
        if let Some(cursor) = &self.next_cursor {
            out.extend_from_slice(b",\"next_cursor\":");
            // A string always serialises.
            let _ = serde_json::to_writer(&mut out, cursor);
        }
        out.extend_from_slice(b",\"position\":");
        out.extend_from_slice(self.position.to_string().as_bytes());
        out.push(b'}');
        out
    }
}

/// The answer to one query message; `reply_limit` is the largest reply the NATS server
/// accepts: lists are cut to fit (with a `next_cursor`), a single item too large for it
/// is a `payload_too_large` refusal.
async fn answer(
    ctx: &QueryContext,
    gets: &batch::Gets,
    message: &Message,
    reply_limit: usize,
) -> Result<Answer, ErrorBody> {
    let max = ctx.settings.max_payload_bytes.min(reply_limit);
    if message.payload.len() > max {
        return Err(ErrorBody::new(
            ErrorReason::TooLarge,
            format!("the query is {} bytes; the limit is {max} bytes", message.payload.len()),
        )
        .with("size", message.payload.len())
        .with("limit", max));
    }
    let unknown = || {
        ErrorBody::new(
            ErrorReason::UnknownSubject,
            format!(
                "{:?} is not a query this service answers; use flexcore.qry.<one of: {}>",
                message.subject.as_str(),
                KNOWN.join(", ")
            ),
        )
    };
    let (view, operation) = subjects::parse_query(message.subject.as_str()).ok_or_else(unknown)?;
    let name = format!("{view}.{operation}");
    if !KNOWN.contains(&name.as_str()) {
        return Err(unknown());
    }
    let body = &message.payload;
    let budget = reply_limit.saturating_sub(REPLY_OVERHEAD);
    match (view, operation) {
        ("stats", _) => {
            let q: StatsQuery = queries::decode(&name, body)?;
            let kinds = [Kind::Plugins, Kind::Pipelines, Kind::Runs, Kind::Schedules];
            reach(ctx, &kinds, q.min_position).await?;
            ok(ctx, Kind::Runs, &views::stats(&ctx.pool, &ctx.upcoming).await?, None)
        }
        ("projection", "list") => {
            let q: ProjectionsQuery = queries::decode(&name, body)?;
            reach(ctx, &Kind::ALL, q.min_position).await?;
            ok(ctx, Kind::Audit, &views::projections(&ctx.pool, ctx.log()).await?, None)
        }
        ("projection", _) => {
            let q: RebuildRequest = queries::decode(&name, body)?;
            let kind = Kind::parse(&q.name).ok_or_else(unknown)?;
            reach(ctx, &[kind], q.min_position).await?;
            ok(ctx, Kind::Audit, &views::request_rebuild(&ctx.pool, kind).await?, None)
        }
        ("plugin", "stats") => {
            let q: GetById = queries::decode(&name, body)?;
            reach(ctx, &[Kind::Plugins, Kind::Runs], q.min_position).await?;
            ok(ctx, Kind::Runs, &views::plugin_stats(&ctx.pool, q.id).await?, None)
        }
        ("event", _) => {
            let q: ListQuery = queries::decode(&name, body)?;
            reach(ctx, &[Kind::Audit], q.min_position).await?;
            let read = async { Ok((list::page(&ctx.pool, &views::EVENTS, &q, |_| Ok(())).await?, None)) };
            list_answer(ctx, &name, Kind::Audit, &q, budget, read).await
        }
        (view, "get") => {
            let target = views::Target::parse(view).ok_or_else(unknown)?;
            let q: GetById = queries::decode(&name, body)?;
            reach(ctx, target.reads(), q.min_position).await?;
            let doc = gets
                .get(target, q.id)
                .await?
                .ok_or_else(|| views::not_found(target, q.id))?;
            if doc.len() > budget {
                return Err(item_too_large(doc.len(), budget));
            }
            Ok(Answer {
                data: doc,
                next_cursor: None,
                position: ctx.positions.get(target.kind()).global_position,
            })
        }
        (view, _) => {
            let target = views::Target::parse(view).ok_or_else(unknown)?;
            let q: ListQuery = queries::decode(&name, body)?;
            reach(ctx, target.reads(), q.min_position).await?;
            list_answer(
                ctx,
                &name,
                target.kind(),
                &q,
                budget,
                views::list(&ctx.pool, target, &q),
            )
            .await
        }
    }
}

fn ok<T: serde::Serialize>(
    ctx: &QueryContext,
    kind: Kind,
    data: &T,
    next_cursor: Option<String>,
) -> Result<Answer, ErrorBody> {
    let data = serde_json::to_string(data).map_err(|e| ErrorBody::new(ErrorReason::Internal, e.to_string()))?;
    Ok(Answer {
        data,
        next_cursor,
        position: ctx.positions.get(kind).global_position,
    })
}

fn item_too_large(size: usize, budget: usize) -> ErrorBody {
    ErrorBody::new(
        ErrorReason::TooLarge,
        format!(
            "the item is {size} bytes, more than fits in one reply ({budget} bytes under the NATS server's max_payload); it cannot be read through this query"
        ),
    )
    .with("size", size)
    .with("limit", budget)
}

/// The refusal of a list page whose first item alone does not fit in a reply: like
/// [`item_too_large`], naming the item (`details.id`, when its document has its id field)
/// and carrying `details.next_cursor`, the cursor that continues after it, so a client can
/// skip it and page on.
fn first_item_too_large(kind: Kind, item: &Item, budget: usize) -> ErrorBody {
    let id = item_id(kind, &item.doc);
    let size = item.doc.len();
    let named = id.as_deref().map_or_else(String::new, |id| format!(" {id}"));
    let mut error = ErrorBody::new(
        ErrorReason::TooLarge,
        format!(
            "the first item of the page{named} is {size} bytes, more than fits in one reply ({budget} bytes under the NATS server's max_payload); it cannot be listed: pass details.next_cursor as cursor to page on after it"
        ),
    )
    .with("size", size)
    .with("limit", budget)
    .with("next_cursor", item.cursor.text());
    if let Some(id) = id {
        error = error.with("id", id);
    }
    error
}

/// The id of a listed item of `kind` (`plugin_id`, `event_id`, …), read from its document.
fn item_id(kind: Kind, doc: &str) -> Option<String> {
    let field = match kind {
        Kind::Plugins => "plugin_id",
        Kind::Pipelines => "pipeline_id",
        Kind::Runs => "run_id",
        Kind::Schedules => "schedule_id",
        Kind::Audit => "event_id",
    };
    let fields: std::collections::HashMap<String, &serde_json::value::RawValue> = serde_json::from_str(doc).ok()?;
    serde_json::from_str(fields.get(field)?.get()).ok()
}

/// A list page's answer: the kept one when nothing it shows can have changed since it was
/// read ([`PageCache`]), else `read` fitted into `budget` (and kept). `read` gives the page
/// and the first next fire it shows.
async fn list_answer(
    ctx: &QueryContext,
    name: &str,
    kind: Kind,
    q: &ListQuery,
    budget: usize,
    read: impl std::future::Future<Output = Result<(Page, Option<DateTime<Utc>>), ErrorBody>>,
) -> Result<Answer, ErrorBody> {
    // `min_position` is not part of the page: it has been waited for. (A query always
    // serialises; one that did not would not be kept.)
    let key = ctx.pages.enabled().then(|| {
        serde_json::to_string(&ListQuery {
            min_position: None,
            ..q.clone()
        })
        .ok()
        .map(|query| format!("{name} {budget} {query}"))
    });
    let Some(Some(key)) = key else {
        return fitted(ctx, kind, read.await?.0, budget);
    };
    let stamp = ctx.positions.stamp();
    let now = std::time::Instant::now();
    if let Some(kept) = ctx.pages.get(&key, &stamp, now) {
        crate::metrics::record_list_cache(true);
        return Ok(Answer {
            // The position the page was checked against.
            position: stamp.get(kind).global_position,
            ..Answer::clone(&kept)
        });
    }
    crate::metrics::record_list_cache(false);
    let (page, first_fire) = read.await?;
    let answer = fitted(ctx, kind, page, budget)?;
    // A page read while the read models moved on would never be answered again.
    if ctx.positions.stamp() == stamp {
        let expires = first_fire.map(|at| now + (at - Utc::now()).to_std().unwrap_or_default());
        ctx.pages.put(key, stamp, now, expires, Arc::new(answer.clone()));
    }
    Ok(answer)
}

/// A page's reply: as many of its items as fit in `budget` bytes, in order, and the cursor
/// after the last one taken when any were left out (or the page has more). A first item
/// that alone does not fit is a `payload_too_large` refusal whose `details.next_cursor`
/// continues after it.
fn fitted(ctx: &QueryContext, kind: Kind, page: Page, budget: usize) -> Result<Answer, ErrorBody> {
    let size = page.items.iter().map(|item| item.doc.len() + 1).sum::<usize>() + 2;
    let mut data = String::with_capacity(size.min(budget));
    data.push('[');
    let mut taken = 0;
    for item in &page.items {
        if data.len() + item.doc.len() + 2 > budget {
            if taken == 0 {
                return Err(first_item_too_large(kind, item, budget));
            }
            break;
        }
        if taken > 0 {
            data.push(',');
        }
        data.push_str(&item.doc);
        taken += 1;
    }
    data.push(']');
    let next_cursor = if taken < page.items.len() || page.more {
        page.items.get(taken.saturating_sub(1)).map(|item| item.cursor.text())
    } else {
        None
    };
    Ok(Answer {
        data,
        next_cursor,
        position: ctx.positions.get(kind).global_position,
    })
}

/// A database failure as a reply: `unavailable` when Postgres cannot be reached, went
/// away or is restarting (`flexcore_eventstore::error::is_unavailable`), else `internal`.
pub fn db_error(error: sqlx::Error) -> ErrorBody {
    if flexcore_eventstore::error::is_unavailable(&error) {
        tracing::debug!(%error, "read-model database unavailable");
        ErrorBody::new(
            ErrorReason::Unavailable,
            format!("the read-model database is unavailable ({error}); retry later"),
        )
    } else {
        tracing::error!(%error, "query failed");
        ErrorBody::new(ErrorReason::Internal, format!("query failed: {error}"))
    }
}

/// Waits until every projection in `kinds` has applied global position `min_position`
/// (bounded by `projection.min_position_timeout_ms`), else `stale`. Position 0 (before
/// the first event) is always reached; a position that is not in the event log is
/// `not_found` (at `/min_position`) at once: every position a reply or an event gives is committed, and
/// so visible here, before anyone can know it, so waiting would not make it appear.
async fn reach(ctx: &QueryContext, kinds: &[Kind], min_position: Option<u64>) -> Result<(), ErrorBody> {
    let Some(position) = min_position.filter(|p| *p > 0) else {
        return Ok(());
    };
    let bound = ctx.settings.min_position_timeout;
    let deadline = Instant::now() + bound;
    let stale = |why: String| {
        ErrorBody::new(ErrorReason::NotReached, why)
            .with("min_position", position)
            .with("waited_ms", bound.as_millis() as u64)
    };
    // The schema bounds it (2^53 - 1), so it fits.
    let pos = i64::try_from(position).unwrap_or(i64::MAX);
    // The reading order is (transaction_id, global_position): find the event's transaction.
    let tx: Option<i64> =
        sqlx::query_scalar("SELECT transaction_id::text::bigint FROM events WHERE global_position = $1")
            .bind(pos)
            .fetch_optional(ctx.log())
            .await
            .map_err(db_error)?;
    let Some(tx) = tx else {
        return Err(ErrorBody::at(
            ErrorReason::NotFound,
            "/min_position",
            format!("position {position} is not in the event log; pass the global_position of a command reply (or the id of an event)"),
        ));
    };
    let target = checkpoint(tx, pos);
    for kind in kinds {
        if !ctx.positions.wait(*kind, target, deadline).await {
            return Err(stale(format!(
                "the {} view has not reached position {position} within {bound:?} (it is at {}); retry later",
                kind.name(),
                ctx.positions.get(*kind).global_position
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flexcore_contracts::queries::QueryOk;
    use flexcore_contracts::OpaqueJson;

    #[test]
    fn an_answer_encodes_as_the_contract_s_query_ok_does() {
        let data = r#"[{"name":"a \"b\"","n":1.50,"nested":{"x":[1,2]}},{"z":null}]"#;
        for next_cursor in [None, Some("7464\u{1f}\"x\"".to_owned())] {
            let answer = Answer {
                data: data.to_owned(),
                next_cursor: next_cursor.clone(),
                position: 9_007_199_254_740_991,
            };
            let expected = serde_json::to_vec(&QueryReply::Ok(QueryOk {
                ok: true,
                data: OpaqueJson::parse(data).unwrap(),
                next_cursor,
                position: 9_007_199_254_740_991,
            }))
            .unwrap();
            assert_eq!(
                String::from_utf8(answer.encode()).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }

    #[test]
    fn a_first_item_too_large_is_refused_with_its_id_and_the_cursor_after_it() {
        let doc = format!(r#"{{"name":"big","pipeline_id":"p-1","blob":"{}"}}"#, "x".repeat(200));
        let item = Item {
            doc: doc.clone(),
            extra: (),
            cursor: list::Cursor::of_position(7),
        };
        let cursor = item.cursor.text();
        let error = first_item_too_large(Kind::Pipelines, &item, 100);
        assert_eq!(error.code.as_str(), "payload_too_large");
        assert_eq!(error.details.reason, ErrorReason::TooLarge);
        let details = &error.details.extra;
        assert_eq!(details["next_cursor"], cursor.as_str());
        assert_eq!(details["id"], "p-1");
        assert_eq!(details["size"], doc.len());
        assert_eq!(details["limit"], 100);
        assert!(error.message.contains("p-1"), "{}", error.message);
        // Without its id field the item is still skippable, just not named.
        let item = Item {
            doc: r#"{"x":1}"#.to_owned(),
            ..item
        };
        let error = first_item_too_large(Kind::Audit, &item, 1);
        assert_eq!(error.details.extra["next_cursor"], cursor.as_str());
        assert!(!error.details.extra.contains_key("id"));
    }
}
