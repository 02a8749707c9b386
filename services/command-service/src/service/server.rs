//! The NATS side: a queue-group subscription on `flexcore.cmd.>`, one task per request
//! (bounded), a reply for every request, and a graceful drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Message};
use bytes::Bytes;
use flexcore_contracts::commands;
use flexcore_contracts::{envelope, subjects, CommandReply, ErrorBody, ErrorCode};
use flexcore_telemetry::propagation;
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::Instrument as _;

use super::executor::{Executor, RequestContext};

/// Limits of the request loop.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Largest accepted command payload in bytes.
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
    // A child of the sender's span (its `traceparent` header), else a new trace.
    let span = tracing::info_span!(
        "command",
        command_type = Empty,
        aggregate_id = Empty,
        correlation_id = Empty
    );
    propagation::set_parent(&span, message.headers.as_ref());
    let started = std::time::Instant::now();
    let reply = answer(executor, &message, max_payload).instrument(span).await;
    super::metrics::record(message.subject.as_str(), &reply, started.elapsed());
    let body = serde_json::to_vec(&reply)
        .unwrap_or_else(|_| br#"{"ok":false,"error":{"code":"internal","message":"reply encoding failed"}}"#.to_vec());
    if let Err(error) = client.publish(reply_to, Bytes::from(body)).await {
        tracing::warn!(%error, "reply could not be sent");
    }
}

async fn answer(executor: &Executor, message: &Message, max_payload: usize) -> CommandReply {
    if message.payload.len() > max_payload {
        return CommandReply::rejected(
            ErrorBody::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the command is {} bytes; the limit is {max_payload} bytes",
                    message.payload.len()
                ),
            )
            .with_details(serde_json::json!({"size": message.payload.len(), "limit": max_payload})),
        );
    }
    let (meta, command) = match commands::decode(message.subject.as_str(), &message.payload) {
        Ok(decoded) => decoded,
        Err(error) => return CommandReply::rejected(error),
    };
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let span = tracing::Span::current();
    span.record("command_type", command.name());
    let ctx = RequestContext {
        correlation_id: header(envelope::HEADER_CORRELATION_ID),
        actor: header(envelope::HEADER_ACTOR),
        // This span's context, so what the events cause (relay, projections, the run)
        // continues under the command handling; the client's own when spans are not exported.
        traceparent: propagation::traceparent(&span).or_else(|| header(envelope::HEADER_TRACEPARENT)),
    };
    // The correlation id the events get (see the executor): the header's, else the command id.
    if let Some(correlation) = &ctx.correlation_id {
        span.record("correlation_id", correlation.as_str());
    } else if let Some(command_id) = meta.command_id {
        span.record("correlation_id", tracing::field::display(command_id));
    }
    executor.execute(meta, command, ctx).await.unwrap_or_else(|error| {
        tracing::debug!(%error, "command refused");
        CommandReply::rejected(error)
    })
}
