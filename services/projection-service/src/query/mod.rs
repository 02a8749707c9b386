//! The query API: a queue-group subscription on `flexcore.qry.>`, a typed reply for every
//! request (never silence), and read-your-writes through `min_position`.
//!
//! Views and operations:
//! - `plugin|pipeline|run|schedule` `.get` ([`GetById`]) and `.list` ([`ListQuery`]);
//! - `event.list` (the audit log; [`ListQuery`] with aggregate/type/time filters);
//! - `stats.get` ([`StatsQuery`]);
//! - `projection.list` (positions, lag, rebuild progress) and `projection.rebuild`.

mod list;
mod views;

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Message};
use bytes::Bytes;
use flexcore_contracts::queries::{
    self, GetById, ListQuery, ProjectionsQuery, QueryErr, QueryOk, QueryReply, RebuildRequest, StatsQuery,
};
use flexcore_contracts::{subjects, ErrorBody, ErrorCode};
use flexcore_telemetry::propagation;
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::positions::{checkpoint, Positions};
use crate::projection::Kind;

pub use list::{ListSpec, DEFAULT_LIMIT};

/// What query handlers share.
pub struct QueryContext {
    /// The read models (and the event log, for positions and lag).
    pub pool: PgPool,
    /// Where each projection stands.
    pub positions: Arc<Positions>,
    /// Tuning.
    pub settings: flexcore_config::ProjectionSettings,
}

/// Every query subject this service answers, for error messages.
pub const KNOWN: &[&str] = &[
    "plugin.get",
    "plugin.list",
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

/// Serves queries until `shutdown`, then drains and waits (bounded) for those in flight.
pub async fn serve(client: Client, ctx: Arc<QueryContext>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let limits = flexcore_service::ServeLimits {
        max_in_flight: ctx.settings.max_in_flight,
        shutdown_grace: ctx.settings.shutdown_grace(),
    };
    let replies = client.clone();
    flexcore_service::serve(
        client,
        subjects::QUERIES_WILDCARD,
        subjects::QUERY_QUEUE_GROUP,
        "queries",
        limits,
        shutdown,
        move |message| {
            let (client, ctx) = (replies.clone(), ctx.clone());
            async move { handle(&client, &ctx, message).await }
        },
    )
    .await
}

async fn handle(client: &Client, ctx: &QueryContext, message: Message) {
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
    let reply = match answer(ctx, &message).instrument(span).await {
        Ok(ok) => QueryReply::Ok(ok),
        Err(error) => QueryReply::Err(QueryErr { ok: false, error }),
    };
    crate::metrics::record_query(message.subject.as_str(), &reply);
    let body = serde_json::to_vec(&reply)
        .unwrap_or_else(|_| br#"{"ok":false,"error":{"code":"internal","message":"reply encoding failed"}}"#.to_vec());
    if let Err(error) = client.publish(reply_to, Bytes::from(body)).await {
        tracing::debug!(%error, "query reply could not be sent");
    }
}

/// The answer to one query message.
pub async fn answer(ctx: &QueryContext, message: &Message) -> Result<QueryOk, ErrorBody> {
    let max = ctx.settings.max_payload_bytes;
    if message.payload.len() > max {
        return Err(ErrorBody::new(
            ErrorCode::PayloadTooLarge,
            format!("the query is {} bytes; the limit is {max} bytes", message.payload.len()),
        ));
    }
    let unknown = || {
        ErrorBody::new(
            ErrorCode::ValidationFailed,
            format!(
                "{:?} is not a query this service answers; use flexcore.qry.<one of: {}>",
                message.subject.as_str(),
                KNOWN.join(", ")
            ),
        )
        .with_details(serde_json::json!({"reason": "unknown_subject"}))
    };
    let (view, operation) = subjects::parse_query(message.subject.as_str()).ok_or_else(unknown)?;
    let body = &message.payload;
    match (view, operation) {
        ("stats", "get") => {
            let q: StatsQuery = queries::decode(body)?;
            let kinds = [Kind::Plugins, Kind::Pipelines, Kind::Runs, Kind::Schedules];
            reach(ctx, &kinds, q.min_position).await?;
            ok(ctx, Kind::Runs, views::stats(&ctx.pool).await?, None)
        }
        ("projection", "list") => {
            let _: ProjectionsQuery = queries::decode(body)?;
            ok(ctx, Kind::Audit, views::projections(&ctx.pool).await?, None)
        }
        ("projection", "rebuild") => {
            let q: RebuildRequest = queries::decode(body)?;
            ok(
                ctx,
                Kind::Audit,
                views::request_rebuild(&ctx.pool, &q.name).await?,
                None,
            )
        }
        ("event", "list") => {
            let q: ListQuery = queries::decode(body)?;
            reach(ctx, &[Kind::Audit], q.min_position).await?;
            let (items, next) = list::page(&ctx.pool, &views::EVENTS, &q).await?;
            ok(ctx, Kind::Audit, items, next)
        }
        (view, "get") => {
            let target = views::Target::parse(view).ok_or_else(unknown)?;
            let q: GetById = queries::decode(body)?;
            reach(ctx, target.reads(), q.min_position).await?;
            ok(ctx, target.kind(), views::get(&ctx.pool, target, q.id).await?, None)
        }
        (view, "list") => {
            let target = views::Target::parse(view).ok_or_else(unknown)?;
            let q: ListQuery = queries::decode(body)?;
            reach(ctx, target.reads(), q.min_position).await?;
            let (items, next) = views::list(&ctx.pool, target, &q).await?;
            ok(ctx, target.kind(), items, next)
        }
        _ => Err(unknown()),
    }
}

fn ok<T: serde::Serialize>(
    ctx: &QueryContext,
    kind: Kind,
    data: T,
    next_cursor: Option<String>,
) -> Result<QueryOk, ErrorBody> {
    let data = serde_json::to_value(data).map_err(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()))?;
    Ok(QueryOk {
        ok: true,
        data,
        next_cursor,
        position: ctx.positions.get(kind).global_position,
    })
}

/// A database failure as a reply: `unavailable` when Postgres cannot be reached in time.
pub fn db_error(error: sqlx::Error) -> ErrorBody {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => ErrorBody::new(
            ErrorCode::Unavailable,
            format!("the read-model database is unavailable ({error}); retry later"),
        ),
        other => {
            tracing::error!(error = %other, "query failed");
            ErrorBody::new(ErrorCode::Internal, format!("query failed: {other}"))
        }
    }
}

/// Waits until every projection in `kinds` has applied global position `min_position`
/// (bounded by `projection.min_position_timeout_ms`), else `stale`.
async fn reach(ctx: &QueryContext, kinds: &[Kind], min_position: Option<u64>) -> Result<(), ErrorBody> {
    let Some(position) = min_position else { return Ok(()) };
    let bound = ctx.settings.min_position_timeout();
    let deadline = Instant::now() + bound;
    let stale = |why: String| {
        ErrorBody::new(ErrorCode::Stale, why).with_details(serde_json::json!({
            "min_position": position,
            "waited_ms": bound.as_millis() as u64,
        }))
    };
    let pos = i64::try_from(position)
        .map_err(|_| ErrorBody::new(ErrorCode::ValidationFailed, "min_position is out of range"))?;
    // The reading order is (transaction_id, global_position): find the event's transaction.
    let target = loop {
        let tx: Option<i64> =
            sqlx::query_scalar("SELECT transaction_id::text::bigint FROM events WHERE global_position = $1")
                .bind(pos)
                .fetch_optional(&ctx.pool)
                .await
                .map_err(db_error)?;
        if let Some(tx) = tx {
            break checkpoint(tx, pos);
        }
        if Instant::now() + Duration::from_millis(10) >= deadline {
            return Err(stale(format!(
                "position {position} is not in the event log (not committed within {bound:?}); pass the global_position of a command reply"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
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
