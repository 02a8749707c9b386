//! Live streams and logs, read from JetStream with ordered (ephemeral) consumers, each
//! message's signature checked before it is passed on (events by the command identity's
//! relay, log lines by a runner): a message nobody trusted signed never reaches a client.
//!
//! - `GET /runs/{id}/events`: Server-Sent Events of one run, from its first event, ending
//!   after the run ended (succeeded, failed for good, cancelled, timed out for good).
//! - `GET /events/stream`: Server-Sent Events of the whole log (filters `aggregate_type`,
//!   `aggregate_id`, `event_type`), each with `id:` its global position, so a client
//!   reconnecting with `Last-Event-ID` continues after the last event it got.
//! - `GET /runs/{id}/logs`: the run's plugin log lines stored so far.
//!
//! At most `gateway.max_streams` streams are open at once (503 beyond); each ends when the
//! client goes away or the gateway stops.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use flexcore_contracts::envelope::{HEADER_EVENT_TYPE, HEADER_GLOBAL_POSITION};
use flexcore_contracts::queries::QueryOk;
use flexcore_contracts::subjects;
use flexcore_contracts::work::RunLogLine;
use flexcore_security::{ApiRole, Role};
use futures::StreamExt as _;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{parse_id, queries, require, Collection};
use crate::problem::Problem;
use crate::{Caller, Gateway};

/// Run states after which nothing more happens.
const FINAL_STATES: [&str; 4] = ["succeeded", "failed", "cancelled", "timed_out"];
/// Most log lines one `GET /runs/{id}/logs` answers.
pub const MAX_LOG_LINES: usize = 10_000;
/// Most bytes of log lines one `GET /runs/{id}/logs` answers (it stops after the line
/// that passes it).
pub const MAX_LOG_BYTES: usize = 4 << 20;
/// Aggregate types of the event log.
const AGGREGATE_TYPES: [&str; 4] = ["plugin", "pipeline", "run", "schedule"];

/// An open stream's place among `gateway.max_streams` and among its caller's
/// `gateway.max_streams_per_caller`; both are given back when it is dropped.
pub struct StreamPermit {
    _global: tokio::sync::OwnedSemaphorePermit,
    caller: String,
    open: Arc<parking_lot::Mutex<std::collections::HashMap<String, usize>>>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        if let Some(n) = open.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

/// A place for one more live stream (or log read) of `caller`: 429 when the caller has
/// its share open, 503 when the gateway has all it serves.
fn stream_permit(gateway: &Gateway, caller: &Caller) -> Result<StreamPermit, Problem> {
    let global = global_stream_permit(gateway)?;
    let name = caller.principal.name.clone();
    let mut open = gateway.open_streams.lock();
    let mine = open.entry(name.clone()).or_insert(0);
    if *mine >= gateway.settings.max_streams_per_caller {
        return Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "{name} has {} live streams open (gateway.max_streams_per_caller); close one first",
                gateway.settings.max_streams_per_caller
            ),
        )
        .with_header(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        ));
    }
    *mine += 1;
    Ok(StreamPermit {
        _global: global,
        caller: name,
        open: gateway.open_streams.clone(),
    })
}

fn global_stream_permit(gateway: &Gateway) -> Result<tokio::sync::OwnedSemaphorePermit, Problem> {
    gateway.streams.clone().try_acquire_owned().map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "{} live streams are open (gateway.max_streams); retry later",
                gateway.settings.max_streams
            ),
        )
        .with_header(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        )
    })
}

/// An ordered consumer of `stream` filtered by `filter`, from `deliver`.
async fn ordered(
    gateway: &Gateway,
    stream: &str,
    filter: String,
    deliver: DeliverPolicy,
) -> Result<async_nats::jetstream::consumer::pull::Ordered, Problem> {
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, stream, "cannot read a stream");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the {stream} stream cannot be read now; retry later"),
        )
    };
    let js = async_nats::jetstream::new(gateway.nats.clone());
    let stream = js.get_stream(stream).await.map_err(|e| unavailable(&e))?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter,
            deliver_policy: deliver,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&e))?;
    consumer.messages().await.map_err(|e| unavailable(&e))
}

/// The event in `message`, if the command identity signed it: (position, type, body).
fn verified_event(gateway: &Gateway, message: &async_nats::jetstream::Message) -> Option<(u64, String, String)> {
    let headers = message.headers.as_ref();
    if let Err(error) = gateway.trust.verify(
        message.subject.as_str(),
        headers,
        &message.payload,
        &[Role::Command],
        None,
    ) {
        tracing::warn!(%error, subject = %message.subject, "skipping an unverified event");
        return None;
    }
    let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
    let position = header(HEADER_GLOBAL_POSITION)?.parse().ok()?;
    let event_type = header(HEADER_EVENT_TYPE)?;
    let body = String::from_utf8(message.payload.to_vec()).ok()?;
    Some((position, event_type, body))
}

/// The SSE response reading `rx` until the sender ends.
fn sse(mut rx: mpsc::Receiver<Event>) -> Response {
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok::<_, Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The `Last-Event-ID` header: the global position of the last event a client saw.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Problem::invalid(
                        "header:Last-Event-ID",
                        "Last-Event-ID must be the id of an event this stream sent (its global position)",
                    )
                })
        })
        .transpose()
}

/// The run's view, as of the position of a write just made (`Consistency-Position`) when
/// the request names one: a run just requested is found rather than 404.
async fn run_view(
    gateway: &Gateway,
    run_id: uuid::Uuid,
    headers: &HeaderMap,
    seen: Option<u64>,
) -> Result<flexcore_contracts::queries::QueryOk, Problem> {
    let mut get = json!({ "id": run_id });
    let asked = queries::position_header(headers)?;
    if let Some(position) = asked {
        get["min_position"] = position.into();
    }
    // A client that has seen the event at `seen` (its Last-Event-ID) gets a view that
    // includes it: the stream it read runs ahead of the read model. An id the read model
    // never reaches (from before a restore) is not the client's fault: then the view as
    // it is.
    if let Some(seen) = seen.filter(|seen| asked.is_none_or(|asked| *seen > asked)) {
        let mut after_seen = get.clone();
        after_seen["min_position"] = seen.into();
        match queries::ask(gateway, "run.get", &after_seen).await {
            Err(problem) if problem.code == "stale" => {}
            answer => return answer,
        }
    }
    queries::ask(gateway, "run.get", &get).await
}

/// `GET /runs/{id}/events`: the run's events so far, then live, ending after the event
/// that ends the run. With `Last-Event-ID` (an `EventSource` reconnecting) it continues
/// after that event, and answers 204 (which stops an `EventSource`) when the run had
/// already ended there. `Consistency-Position` (a POST's) makes a run just requested
/// found rather than 404.
pub async fn run_events(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    require(&caller.principal, ApiRole::Viewer, "reading")?;
    let run_id = parse_id(Collection::Runs, &id)?;
    let last = last_event_id(&headers)?;
    // A run that does not exist is a 404, not a stream that never ends.
    let view = run_view(&gateway, run_id, &headers, last).await?;
    if let Some(after) = last {
        if run_is_final(&view) {
            // The run's last event, from the audit view (which has the run's end: the
            // run view's answer included it).
            let body = json!({"aggregate_id": run_id, "order": "desc", "limit": 1, "min_position": view.position});
            let page = queries::ask(&gateway, "event.list", &body).await?;
            let newest = serde_json::from_str::<Value>(page.data.as_str())
                .ok()
                .and_then(|v| v.pointer("/0/global_position").and_then(Value::as_u64));
            if newest.is_some_and(|p| p <= after) {
                return Ok(StatusCode::NO_CONTENT.into_response());
            }
        }
    }
    let permit = stream_permit(&gateway, &caller)?;
    let mut messages = ordered(
        &gateway,
        subjects::EVENTS_STREAM,
        subjects::events_of_aggregate("run", run_id),
        DeliverPolicy::All,
    )
    .await?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let _permit = permit;
        loop {
            let message = tokio::select! {
                () = gateway.shutdown.cancelled() => return,
                () = tx.closed() => return,
                m = messages.next() => m,
            };
            let Some(Ok(message)) = message else {
                return;
            };
            let Some((position, event_type, body)) = verified_event(&gateway, &message) else {
                continue;
            };
            let ended = run_ended(&event_type, &body);
            if last.is_none_or(|after| position > after) {
                let event = Event::default().id(position.to_string()).event(&event_type).data(body);
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            if ended {
                return;
            }
        }
    });
    Ok(sse(rx))
}

/// `GET /runs/{id}/logs/stream`: the run's log lines as Server-Sent Events (event `line`,
/// data a `RunLogLine`), the stored ones first, then live; the stream ends after the run's
/// final event (at once for a run that has ended).
pub async fn run_logs(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    require(&caller.principal, ApiRole::Viewer, "reading")?;
    let run_id = parse_id(Collection::Runs, &id)?;
    let mut ended = run_is_final(&run_view(&gateway, run_id, &headers, None).await?);
    let permit = stream_permit(&gateway, &caller)?;
    let mut lines = ordered(
        &gateway,
        subjects::LOGS_STREAM,
        subjects::run_logs(run_id),
        DeliverPolicy::All,
    )
    .await?;
    let mut events = ordered(
        &gateway,
        subjects::EVENTS_STREAM,
        subjects::events_of_aggregate("run", run_id),
        DeliverPolicy::New,
    )
    .await?;
    // The run may have ended between the first look and the events consumer: look again.
    if !ended {
        ended = run_is_final(&queries::ask(&gateway, "run.get", &json!({ "id": run_id })).await?);
    }
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let _permit = permit;
        loop {
            // After the run's end, the lines already stored, then the stream ends.
            let wait = if ended {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                () = gateway.shutdown.cancelled() => return,
                () = tx.closed() => return,
                event = events.next(), if !ended => {
                    let Some(Ok(message)) = event else { return };
                    if let Some((_, event_type, body)) = verified_event(&gateway, &message) {
                        ended = run_ended(&event_type, &body);
                    }
                }
                line = tokio::time::timeout(wait, lines.next()) => {
                    let Ok(Some(Ok(message))) = line else {
                        if ended {
                            return;
                        }
                        continue;
                    };
                    // A verified line is sent as it was stored.
                    let Ok(text) = std::str::from_utf8(&message.payload) else { continue };
                    if verified_line(&gateway, &message).is_some()
                        && tx.send(Event::default().event("line").data(text)).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    Ok(sse(rx))
}

/// Whether the run view of a `run.get` answer is in a final state.
fn run_is_final(view: &QueryOk) -> bool {
    serde_json::from_str::<Value>(view.data.as_str())
        .ok()
        .and_then(|v| {
            v.get("state")
                .and_then(Value::as_str)
                .map(|s| FINAL_STATES.contains(&s))
        })
        .unwrap_or(false)
}

/// A message of the logs stream as a log line, if a runner signed it and it is one.
fn verified_line(gateway: &Gateway, message: &async_nats::jetstream::Message) -> Option<RunLogLine> {
    gateway
        .trust
        .verify(
            message.subject.as_str(),
            message.headers.as_ref(),
            &message.payload,
            &[Role::Runner],
            None,
        )
        .ok()?;
    serde_json::from_slice(&message.payload).ok()
}

/// Whether the event of `event_type` (its envelope `body`) ends the run: a success or a
/// cancellation does; a failure or time-out when it says it is `final` (no retry follows).
fn run_ended(event_type: &str, body: &str) -> bool {
    match event_type {
        "run.succeeded" | "run.cancelled" => true,
        "run.failed" | "run.timed_out" => serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v.pointer("/data/final").and_then(Value::as_bool))
            .unwrap_or(false),
        _ => false,
    }
}

/// The events subject filter of the stream's query parameters.
fn events_filter(query: Option<&str>) -> Result<String, Problem> {
    let (mut aggregate_type, mut aggregate_id, mut event_type) =
        (None::<String>, "*".to_owned(), None::<(String, String)>);
    let mut seen = Vec::new();
    for (key, value) in queries::form_pairs(query.unwrap_or("")) {
        if seen.contains(&key) {
            return Err(Problem::invalid(
                format!("query:{key}"),
                format!("{key} is given twice"),
            ));
        }
        seen.push(key.clone());
        match key.as_str() {
            "aggregate_type" if AGGREGATE_TYPES.contains(&value.as_str()) => aggregate_type = Some(value),
            "aggregate_type" => {
                return Err(Problem::invalid(
                    "query:aggregate_type",
                    format!("aggregate_type must be one of {}", AGGREGATE_TYPES.join(", ")),
                ))
            }
            "aggregate_id" => {
                aggregate_id = Uuid::parse_str(&value)
                    .map_err(|_| Problem::invalid("query:aggregate_id", "aggregate_id must be a UUID"))?
                    .to_string();
            }
            "event_type" => {
                let (a, n) = value
                    .split_once('.')
                    .filter(|(a, n)| {
                        AGGREGATE_TYPES.contains(a)
                            && !n.is_empty()
                            && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    })
                    .ok_or_else(|| {
                        Problem::invalid(
                            "query:event_type",
                            "event_type must be an event type such as run.succeeded",
                        )
                    })?;
                event_type = Some((a.to_owned(), n.to_owned()));
            }
            other => {
                return Err(Problem::invalid(
                    format!("query:{other}"),
                    "unknown parameter: the stream takes aggregate_type, aggregate_id and event_type",
                ))
            }
        }
    }
    let (aggregate, action) = match (aggregate_type, event_type) {
        (Some(t), Some((a, _))) if t != a => {
            return Err(Problem::invalid(
                "query:event_type",
                format!("event_type {a}.… is not of aggregate_type {t}"),
            ))
        }
        (_, Some((a, n))) => (a, n),
        (Some(t), None) => (t, "*".to_owned()),
        (None, None) => ("*".to_owned(), "*".to_owned()),
    };
    Ok(format!("{}.evt.{aggregate}.{aggregate_id}.{action}", subjects::ROOT))
}

/// The first stream sequence holding an event after global position `after` (events are
/// in the stream in position order; a binary search over the stored messages' headers).
async fn sequence_after(gateway: &Gateway, after: u64) -> Result<Option<u64>, Problem> {
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "cannot search the events stream");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the events stream cannot be read now",
        )
    };
    let js = async_nats::jetstream::new(gateway.nats.clone());
    let mut stream = js
        .get_stream(subjects::EVENTS_STREAM)
        .await
        .map_err(|e| unavailable(&e))?;
    let state = stream.info().await.map_err(|e| unavailable(&e))?.state.clone();
    if state.messages == 0 {
        return Ok(None);
    }
    let position_at = |seq: u64| {
        let stream = stream.clone();
        async move {
            let message = stream.get_raw_message(seq).await.ok()?;
            message
                .headers
                .get(HEADER_GLOBAL_POSITION)
                .and_then(|v| v.as_str().parse::<u64>().ok())
        }
    };
    let (mut low, mut high) = (state.first_sequence, state.last_sequence + 1);
    // Invariant: every sequence below `low` is at or before `after`; `high` and above after it.
    while low < high {
        let mid = low + (high - low) / 2;
        match position_at(mid).await {
            Some(position) if position <= after => low = mid + 1,
            Some(_) => high = mid,
            // A gap (a deleted message): look at the lower half's last message instead.
            None => high = mid,
        }
    }
    Ok(Some(low))
}

/// `GET /events/stream`.
pub async fn events(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    require(&caller.principal, ApiRole::Viewer, "reading")?;
    let filter = events_filter(query.as_deref())?;
    let last = last_event_id(&headers)?;
    let deliver = match last {
        None => DeliverPolicy::New,
        Some(after) => match sequence_after(&gateway, after).await? {
            None => DeliverPolicy::All,
            Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
        },
    };
    let permit = stream_permit(&gateway, &caller)?;
    let mut messages = ordered(&gateway, subjects::EVENTS_STREAM, filter, deliver).await?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let _permit = permit;
        loop {
            let message = tokio::select! {
                () = gateway.shutdown.cancelled() => return,
                () = tx.closed() => return,
                m = messages.next() => m,
            };
            let Some(Ok(message)) = message else {
                return;
            };
            let Some((position, event_type, body)) = verified_event(&gateway, &message) else {
                continue;
            };
            if last.is_some_and(|after| position <= after) {
                continue;
            }
            let event = Event::default().id(position.to_string()).event(&event_type).data(body);
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    Ok(sse(rx))
}

/// `GET /runs/{id}/logs?limit=<n>`: `{"lines": [...]}`, oldest first.
pub async fn logs(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    require(&caller.principal, ApiRole::Viewer, "reading")?;
    let run_id = parse_id(Collection::Runs, &id)?;
    let mut limit = 1000usize;
    for pair in query.as_deref().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("limit", n)) => {
                limit = n
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LOG_LINES).contains(n))
                    .ok_or_else(|| Problem::invalid("query:limit", format!("limit must be 1 to {MAX_LOG_LINES}")))?;
            }
            _ => return Err(Problem::invalid("query", "the logs take one parameter: limit")),
        }
    }
    let mut get = json!({ "id": run_id });
    if let Some(position) = queries::position_header(&headers)? {
        get["min_position"] = position.into();
    }
    queries::ask(&gateway, "run.get", &get).await?;
    let lines = stored_lines(&gateway, &caller, run_id, limit).await?;
    Ok(Json(json!({ "run_id": run_id, "lines": lines })).into_response())
}

/// The first `limit` log lines stored for run `run_id` (at most [`MAX_LOG_BYTES`] of
/// them), oldest first, each signed by a runner.
pub async fn stored_lines(
    gateway: &Gateway,
    caller: &Caller,
    run_id: Uuid,
    limit: usize,
) -> Result<Vec<RunLogLine>, Problem> {
    let subject = subjects::run_logs(run_id);
    let js = async_nats::jetstream::new(gateway.nats.clone());
    let stored = match js.get_stream(subjects::LOGS_STREAM).await {
        Ok(stream) => stream.get_last_raw_message_by_subject(&subject).await.is_ok(),
        Err(_) => false,
    };
    let mut lines = Vec::new();
    if stored {
        // A read of the logs stream holds a stream's place while it lasts.
        let _permit = stream_permit(gateway, caller)?;
        let mut bytes = 0usize;
        let mut messages = ordered(gateway, subjects::LOGS_STREAM, subject, DeliverPolicy::All).await?;
        while lines.len() < limit && bytes < MAX_LOG_BYTES {
            let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await else {
                break;
            };
            let pending = message.info().map(|i| i.pending).unwrap_or(0);
            if let Some(line) = verified_line(gateway, &message) {
                bytes += message.payload.len();
                lines.push(line);
            }
            if pending == 0 {
                break;
            }
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stream_filters_become_subjects() {
        assert_eq!(events_filter(None).unwrap(), "flexcore.evt.*.*.*");
        assert_eq!(
            events_filter(Some("event_type=run.succeeded")).unwrap(),
            "flexcore.evt.run.*.succeeded"
        );
        assert_eq!(
            events_filter(Some("event_type=run%2Esucceeded")).unwrap(),
            "flexcore.evt.run.*.succeeded",
            "percent-decoded like every query string"
        );
        let id = Uuid::from_u128(5);
        assert_eq!(
            events_filter(Some(&format!("aggregate_type=pipeline&aggregate_id={id}"))).unwrap(),
            format!("flexcore.evt.pipeline.{id}.*")
        );
        for bad in [
            "aggregate_type=>",
            "event_type=run.*",
            "aggregate_id=x",
            "foo=1",
            "aggregate_type=run&event_type=pipeline.created",
            "event_type=pipeline.created&aggregate_type=run",
            "aggregate_type=run&aggregate_type=run",
        ] {
            assert!(events_filter(Some(bad)).is_err(), "{bad}");
        }
    }
}
