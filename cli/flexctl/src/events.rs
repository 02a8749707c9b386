//! `flexctl events tail`: events live from the `FLEXCORE_EVENTS` stream (an ordered,
//! ephemeral consumer: nothing is left behind on the server), optionally filtered by
//! aggregate and by event type; and the event subscription `run start --follow` uses.

use anyhow::Context as _;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, consumer::pull::Ordered};
use clap::Args;
use flexcore_contracts::{subjects, EventEnvelope};
use futures::StreamExt as _;
use uuid::Uuid;

use crate::cli::Output;
use crate::nats::Nats;

/// Options of `flexctl events tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Only events of this aggregate (a pipeline, run, plugin or schedule id).
    #[arg(long)]
    pub aggregate: Option<Uuid>,
    /// Only events of this type, e.g. `run.succeeded` (or an aggregate type: `run`).
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Start with the last N matching events already stored, then follow.
    #[arg(long, default_value_t = 0)]
    pub last: u64,
    /// Start from the first stored event, then follow.
    #[arg(long, conflicts_with = "last")]
    pub all: bool,
    /// Stop after this many events (default: follow until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
}

/// The NATS filter subject for an aggregate and/or event type.
pub fn filter_subject(aggregate: Option<Uuid>, event_type: Option<&str>) -> anyhow::Result<String> {
    let (aggregate_type, name) = match event_type {
        None => ("*", "*"),
        Some(t) => match t.split_once('.') {
            Some((a, n)) if !a.is_empty() && !n.is_empty() && !n.contains('.') => (a, n),
            None if !t.is_empty() && !t.contains(['*', '>', ' ']) => (t, "*"),
            _ => anyhow::bail!("--type {t:?} is not an event type like run.succeeded, nor an aggregate type like run"),
        },
    };
    let id = aggregate.map_or_else(|| "*".to_owned(), |a| a.to_string());
    Ok(format!("{}.evt.{aggregate_type}.{id}.{name}", subjects::ROOT))
}

/// An ordered consumer of the events matching `filter`, from `deliver`.
pub async fn subscribe(client: &async_nats::Client, filter: &str, deliver: DeliverPolicy) -> anyhow::Result<Ordered> {
    let js = jetstream::new(client.clone());
    let stream = js.get_stream(subjects::EVENTS_STREAM).await.with_context(|| {
        format!(
            "the {} stream is not there: has flexcore-command ever run against this NATS?",
            subjects::EVENTS_STREAM
        )
    })?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy: deliver,
            ..Default::default()
        })
        .await
        .context("creating an ordered consumer on the events stream")?;
    consumer.messages().await.context("reading the events stream")
}

/// One event as a human line.
pub fn line(e: &EventEnvelope) -> String {
    let data = serde_json::to_string(&e.data).unwrap_or_default();
    let data = if data.chars().count() > 160 {
        format!("{}…", data.chars().take(160).collect::<String>())
    } else {
        data
    };
    format!(
        "{:>8}  {}  {:<26} {}  {data}",
        e.global_position,
        e.recorded_at.format("%H:%M:%S%.3f"),
        e.event_type,
        crate::table::short(e.aggregate_id)
    )
}

/// Runs `flexctl events tail`.
pub async fn tail(nats: &Nats, args: &TailArgs, output: Output) -> anyhow::Result<()> {
    let client = nats.connect().await?;
    let filter = filter_subject(args.aggregate, args.event_type.as_deref())?;
    let deliver = if args.all {
        DeliverPolicy::All
    } else if args.last > 0 {
        let js = jetstream::new(client.clone());
        let mut stream = js.get_stream(subjects::EVENTS_STREAM).await?;
        let last = stream.info().await?.state.last_sequence;
        DeliverPolicy::ByStartSequence {
            start_sequence: last.saturating_sub(args.last).max(1),
        }
    } else {
        DeliverPolicy::New
    };
    let mut messages = subscribe(&client, &filter, deliver).await?;
    if output == Output::Text {
        tracing::info!(filter, "following events (Ctrl-C stops)");
    }
    let mut seen = 0;
    while let Some(message) = messages.next().await {
        let message = message.context("reading the events stream")?;
        let event: EventEnvelope = match serde_json::from_slice(&message.payload) {
            Ok(e) => e,
            Err(error) => {
                tracing::warn!(subject = %message.subject, %error, "skipping an unreadable event");
                continue;
            }
        };
        match output {
            Output::Json => crate::write_stdout(&serde_json::to_string(&event)?)?,
            Output::Text => crate::write_stdout(&line(&event))?,
        }
        seen += 1;
        if args.count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_subjects() {
        let id = Uuid::nil();
        assert_eq!(filter_subject(None, None).unwrap(), "flexcore.evt.*.*.*");
        assert_eq!(
            filter_subject(Some(id), Some("run.succeeded")).unwrap(),
            format!("flexcore.evt.run.{id}.succeeded")
        );
        assert_eq!(
            filter_subject(None, Some("schedule")).unwrap(),
            "flexcore.evt.schedule.*.*"
        );
        assert!(filter_subject(None, Some("run.")).is_err());
        assert!(filter_subject(None, Some("a.b.c")).is_err());
        assert!(filter_subject(None, Some(">")).is_err());
    }
}
