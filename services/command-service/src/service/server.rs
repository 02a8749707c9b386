//! The NATS side: a queue-group subscription on `flexcore.cmd.>`, one task per request
//! (bounded), a reply for every request, and a graceful drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Message};
use flexcore_contracts::commands;
use flexcore_contracts::rules::MAX_LABEL_CHARS;
use flexcore_contracts::{envelope, subjects, CommandReply, ErrorBody, ErrorReason};
use flexcore_telemetry::propagation;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::executor::{Executor, Prepared, RequestContext};

/// Limits of the request loop.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Largest accepted command payload in bytes (the NATS server's `max_payload` caps it too).
    pub max_payload_bytes: usize,
    /// Most requests handled at once.
    pub max_in_flight: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

/// Serves commands until `shutdown`, then stops taking new ones and waits (bounded) for
/// those in flight to be answered.
pub async fn serve(
    client: Client,
    executor: Arc<Executor>,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let bounds = flexcore_service::ServeLimits {
        max_in_flight: limits.max_in_flight,
        shutdown_grace: limits.shutdown_grace,
    };
    let max = limits.max_payload_bytes;
    let replies = client.clone();
    flexcore_service::serve(
        client,
        subjects::COMMANDS_WILDCARD,
        subjects::COMMAND_QUEUE_GROUP,
        "commands",
        bounds,
        shutdown,
        move |message| {
            let (client, executor) = (replies.clone(), executor.clone());
            async move { handle(&client, &executor, message, max).await }
        },
    )
    .await
}

async fn handle(client: &Client, executor: &Executor, message: Message, max_payload: usize) {
    let Some(reply_to) = message.reply.clone() else {
        tracing::warn!(subject = %message.subject, "command without a reply subject dropped: send it as a request");
        return;
    };
    let started = std::time::Instant::now();
    let bus_limit = client.max_payload();
    let reply = answer(executor, &message, max_payload.min(bus_limit), bus_limit).await;
    super::metrics::record(message.subject.as_str(), &reply, started.elapsed());
    let body = serde_json::to_vec(&reply).unwrap_or_else(|e| {
        flexcore_service::reply::error_body(&ErrorBody::new(
            ErrorReason::Internal,
            format!("reply encoding failed: {e}"),
        ))
    });
    flexcore_service::reply::send(client, reply_to, body).await;
}

/// A label header (`Flexcore-Actor`, `Flexcore-Correlation-Id`): stored on every event, so
/// it is held to the rules of a label (printable, at most 200 characters).
fn label_header(message: &Message, name: &str) -> Result<Option<String>, ErrorBody> {
    let Some(value) = message.headers.as_ref().and_then(|h| h.get(name)) else {
        return Ok(None);
    };
    match value.as_str().parse::<flexcore_contracts::values::Label>() {
        Ok(label) => Ok(Some(label.to_string())),
        Err(_) => Err(ErrorBody::new(
            ErrorReason::InvalidValue,
            format!("header {name} must be 1-{MAX_LABEL_CHARS} printable characters, not all blank"),
        )
        .with("header", name)),
    }
}

async fn answer(executor: &Executor, message: &Message, max_payload: usize, bus_limit: usize) -> CommandReply {
    let headers = label_header(message, envelope::HEADER_CORRELATION_ID)
        .and_then(|correlation| Ok((correlation, label_header(message, envelope::HEADER_ACTOR)?)));
    let decoded = headers.and_then(|headers| Ok((headers, decode(message, max_payload)?)));
    let prepared = match decoded {
        Ok((headers, (meta, command))) => (headers, Prepared::new(meta, command)),
        Err(error) => {
            // Refused before it is understood; still a span in the sender's trace.
            let span = tracing::info_span!("command", subject = %message.subject, error = error.code.as_str());
            propagation::set_parent(&span, message.headers.as_ref());
            tracing::debug!(parent: &span, reason = %error.message, "command refused");
            return CommandReply::rejected(error);
        }
    };
    let ((correlation_id, actor), prepared) = prepared;
    // The correlation id the events get (see the executor): the header's, else the command id.
    let correlation = correlation_id
        .clone()
        .or_else(|| prepared.command_id().map(|id| id.to_string()));
    // A child of the sender's span (its `traceparent` header), else a new trace. Every
    // field is known here: a field recorded later would re-format the span's fields.
    let span = tracing::info_span!(
        "command",
        command_type = prepared.command().name(),
        aggregate_id = %prepared.aggregate_id(),
        correlation_id = correlation.as_deref(),
    );
    propagation::set_parent(&span, message.headers.as_ref());
    let ctx = RequestContext {
        correlation_id,
        actor,
        // This span's context, so what the events cause (relay, projections, the run)
        // continues under the command handling; the client's own (when valid) when spans
        // are not exported.
        traceparent: propagation::traceparent(&span).or_else(|| propagation::header(message.headers.as_ref())),
        bus_limit,
    };
    async {
        executor.execute(prepared, ctx).await.unwrap_or_else(|error| {
            tracing::debug!(%error, "command refused");
            CommandReply::rejected(error)
        })
    }
    .instrument(span)
    .await
}

/// The command in `message`, or why it is refused unread (too large, not a command).
/// `max_payload` is the smaller of `command.max_payload_bytes` and the server's limit.
fn decode(message: &Message, max_payload: usize) -> Result<(commands::CommandMeta, commands::Command), ErrorBody> {
    if message.payload.len() > max_payload {
        return Err(ErrorBody::new(
            ErrorReason::TooLarge,
            format!(
                "the command is {} bytes; the limit is {max_payload} bytes",
                message.payload.len()
            ),
        )
        .with("size", message.payload.len())
        .with("limit", max_payload));
    }
    commands::decode(message.subject.as_str(), &message.payload)
}
