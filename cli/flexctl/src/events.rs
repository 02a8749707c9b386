//! `flexctl events tail` and `flexctl events list`: events from the `FLEXCORE_EVENTS`
//! stream (ordered, ephemeral consumers: nothing is left behind on the server), filtered
//! by aggregate and by event type; and the event subscription `run start --follow` uses.
//! Following itself (reconnecting, consumers made again) is [`crate::follow`].
//!
//! `tail` follows (optionally after the last N matching events); `list` is the audit
//! log: the matching events stored when it starts, then it exits. With `--output json`
//! both print JSON Lines (one event envelope per line).

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, consumer::pull::Ordered};
use chrono::{DateTime, Utc};
use clap::Args;
use flexcore_contracts::{subjects, EventEnvelope};
use uuid::Uuid;

use crate::cli::Output;
use crate::follow::{ordered_consumer, Follow, Next, OrderedConsumer, Watch, RECONNECT_TIMEOUT};
use crate::nats::Nats;

/// Which events `events tail` and `events list` print.
#[derive(Debug, Clone, Args)]
pub struct Filter {
    /// Only events of this aggregate: a pipeline, run, plugin or schedule, by id, unique id
    /// prefix, pipeline name or plugin name@version.
    #[arg(long, value_name = "ID|NAME")]
    pub aggregate: Option<String>,
    /// Only events of this type, e.g. `run.succeeded` (or an aggregate type: `run`).
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
}

/// Options of `flexctl events tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Which events.
    #[command(flatten)]
    pub filter: Filter,
    /// First print the last N stored events that match --aggregate and --type (exactly N,
    /// or all of them when fewer are stored), then follow new ones. 0: only new ones.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub last: u64,
    /// Start from the first stored event, then follow.
    #[arg(long, conflicts_with = "last")]
    pub all: bool,
    /// Stop after this many events (default: follow until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
    /// Give up (exit non-zero) when the connection to NATS is lost for this long.
    #[arg(long, default_value = RECONNECT_TIMEOUT, value_parser = crate::duration::parse_duration)]
    pub reconnect_timeout: Duration,
}

/// Options of `flexctl events list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Which events.
    #[command(flatten)]
    pub filter: Filter,
    /// Only events recorded at or after this time: RFC 3339 (`2026-01-31T12:00:00Z`) or a
    /// duration ago (`1h`, `2d`).
    #[arg(long, value_name = "TIME|DURATION", value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Only events recorded at or before this time (RFC 3339, or a duration ago).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
    /// At most this many events (the oldest that match).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Give up (exit non-zero) when the connection to NATS is lost for this long.
    #[arg(long, default_value = RECONNECT_TIMEOUT, value_parser = crate::duration::parse_duration)]
    pub reconnect_timeout: Duration,
}

/// A point in time on the command line: RFC 3339, or a duration before now.
pub fn parse_time(input: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(input.trim()) {
        return Ok(time.with_timezone(&Utc));
    }
    let ago = crate::duration::parse_duration(input).map_err(|_| {
        format!("{input:?} is neither a time (RFC 3339, e.g. 2026-01-31T12:00:00Z) nor a duration ago (e.g. 1h, 2d)")
    })?;
    let ago = chrono::Duration::from_std(ago).map_err(|_| format!("{input:?} is too long ago"))?;
    Utc::now()
        .checked_sub_signed(ago)
        .ok_or_else(|| format!("{input:?} is too long ago"))
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

async fn events_stream(client: &async_nats::Client) -> anyhow::Result<jetstream::stream::Stream> {
    jetstream::new(client.clone())
        .get_stream(subjects::EVENTS_STREAM)
        .await
        .with_context(|| {
            format!(
                "the {} stream is not there: has flexcore-command ever run against this NATS?",
                subjects::EVENTS_STREAM
            )
        })
}

/// An ordered consumer of the events matching `filter`, from `deliver`.
pub async fn subscribe(client: &async_nats::Client, filter: &str, deliver: DeliverPolicy) -> anyhow::Result<Ordered> {
    let stream = events_stream(client).await?;
    let consumer = ordered_consumer(&stream, filter, deliver).await?;
    consumer.messages().await.context("reading the events stream")
}

/// The first stream sequence of a window of `window` messages ending at `last`.
fn window_start(last: u64, window: u64) -> u64 {
    last.saturating_sub(window.saturating_sub(1)).max(1)
}

/// The ordered consumer of `--last n` matching events, and how many of its first
/// messages to skip. A filter matches only some messages, so the window of sequences
/// read is widened backwards (doubling) until at least `n` match in it, or it reaches the
/// start of the stream; the consumer's `num_pending` says how many match from its start.
async fn last_matching(
    stream: &mut jetstream::stream::Stream,
    filter: &str,
    n: u64,
) -> anyhow::Result<(OrderedConsumer, DeliverPolicy, u64)> {
    let last = stream
        .info()
        .await
        .context("reading the events stream's state")?
        .state
        .last_sequence;
    let mut window = n;
    loop {
        let start = window_start(last, window);
        let deliver = DeliverPolicy::ByStartSequence { start_sequence: start };
        let consumer = ordered_consumer(stream, filter, deliver).await?;
        let pending = consumer.cached_info().num_pending;
        if pending >= n || start <= 1 {
            return Ok((consumer, deliver, pending.saturating_sub(n)));
        }
        // Not used: removed now rather than when the server times it out.
        let _ = stream.delete_consumer(&consumer.cached_info().name).await;
        window = window.saturating_mul(2);
    }
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

/// One event as a line of `events list`: position, time, type, aggregate id, actor.
pub fn list_line(e: &EventEnvelope) -> String {
    format!(
        "{:>8}  {}  {:<26} {}  {}",
        e.global_position,
        e.recorded_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        e.event_type,
        e.aggregate_id,
        e.metadata.actor.as_deref().unwrap_or("-")
    )
}

/// The aggregate `--aggregate` names (an id, a unique prefix or a name, resolved by the
/// projection service: [`crate::api::Api::aggregate_id`]), if given.
async fn aggregate_id(nats: &Nats, reference: Option<&str>) -> anyhow::Result<Option<Uuid>> {
    match reference {
        None => Ok(None),
        Some(reference) => match Uuid::parse_str(reference.trim()) {
            // A whole id needs no projection service.
            Ok(id) => Ok(Some(id)),
            Err(_) => Ok(Some(
                nats.api().await?.aggregate_id(reference).await.context("--aggregate")?,
            )),
        },
    }
}

/// Runs `flexctl events tail`.
pub async fn tail(nats: &Nats, args: &TailArgs, output: Output) -> anyhow::Result<()> {
    let aggregate = aggregate_id(nats, args.filter.aggregate.as_deref()).await?;
    let client = nats.connect_following().await?;
    let filter = filter_subject(aggregate, args.filter.event_type.as_deref())?;
    let mut stream = events_stream(&client).await?;
    let (consumer, deliver, mut skip) = if args.all {
        let deliver = DeliverPolicy::All;
        (ordered_consumer(&stream, &filter, deliver).await?, deliver, 0)
    } else if args.last > 0 {
        last_matching(&mut stream, &filter, args.last).await?
    } else {
        // What `DeliverPolicy::New` means, as a position to start again from.
        let last = stream
            .info()
            .await
            .context("reading the events stream's state")?
            .state
            .last_sequence;
        let deliver = DeliverPolicy::ByStartSequence {
            start_sequence: last + 1,
        };
        (ordered_consumer(&stream, &filter, deliver).await?, deliver, 0)
    };
    if output == Output::Text {
        tracing::info!(filter, "following events (Ctrl-C stops)");
    }
    let watch = Watch::new(&client, &nats.url, args.reconnect_timeout);
    let mut follow = Follow::new(stream, filter, deliver, consumer, watch).await?;
    let mut seen = 0;
    while let Next::Message(message) = follow.next(None).await? {
        if skip > 0 {
            skip -= 1;
            continue;
        }
        let Some(event) = decode(&message) else { continue };
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

fn decode(message: &jetstream::Message) -> Option<EventEnvelope> {
    match serde_json::from_slice(&message.payload) {
        Ok(e) => Some(e),
        Err(error) => {
            tracing::warn!(subject = %message.subject, %error, "skipping an unreadable event");
            None
        }
    }
}

/// Where `events list` starts reading.
pub fn list_start(since: Option<DateTime<Utc>>) -> anyhow::Result<DeliverPolicy> {
    let Some(since) = since else {
        return Ok(DeliverPolicy::All);
    };
    // From JSON, as the server takes it: the policy holds a `time` date this crate need
    // not name.
    serde_json::from_value(serde_json::json!({
        "deliver_policy": "by_start_time",
        "opt_start_time": since.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    }))
    .context("--since")
}

/// Runs `flexctl events list`: the matching events stored when it starts, oldest first.
pub async fn list(nats: &Nats, args: &ListArgs, output: Output) -> anyhow::Result<()> {
    if let (Some(since), Some(until)) = (args.since, args.until) {
        anyhow::ensure!(since <= until, "--since {since} is after --until {until}");
    }
    let aggregate = aggregate_id(nats, args.filter.aggregate.as_deref()).await?;
    let client = nats.connect_following().await?;
    let filter = filter_subject(aggregate, args.filter.event_type.as_deref())?;
    let mut stream = events_stream(&client).await?;
    // The end: what is stored now. Later events are for `events tail`.
    let end = stream
        .info()
        .await
        .context("reading the events stream's state")?
        .state
        .last_sequence;
    if end == 0 {
        return Ok(());
    }
    let deliver = list_start(args.since)?;
    let consumer = ordered_consumer(&stream, &filter, deliver).await?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(());
    }
    let watch = Watch::new(&client, &nats.url, args.reconnect_timeout);
    let mut follow = Follow::new(stream, filter, deliver, consumer, watch).await?;
    let mut printed = 0;
    while let Next::Message(message) = follow.next(None).await? {
        let info = message
            .info()
            .map_err(|e| anyhow::anyhow!("an event without its stream position: {e}"))?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        if sequence > end {
            break;
        }
        if let Some(event) = decode(&message) {
            if args.until.is_some_and(|until| event.recorded_at > until) {
                break;
            }
            // The server starts at the first message it stored at --since, by its own
            // clock (nats-server 2.9 at the stream's start when --since is after its last
            // message): the event's own time decides.
            if args.since.is_none_or(|since| event.recorded_at >= since) {
                match output {
                    Output::Json => crate::write_stdout(&serde_json::to_string(&event)?)?,
                    Output::Text => crate::write_stdout(&list_line(&event))?,
                }
                printed += 1;
            }
        }
        if sequence >= end || pending == 0 || args.limit.is_some_and(|limit| printed >= limit) {
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

    #[test]
    fn a_window_of_n_ends_at_the_last_sequence() {
        assert_eq!(window_start(10, 1), 10);
        assert_eq!(window_start(10, 4), 7);
        assert_eq!(window_start(10, 10), 1);
        assert_eq!(window_start(10, 50), 1);
        assert_eq!(window_start(0, 3), 1);
    }

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        let t = parse_time("2026-01-31T12:00:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-31T12:00:00+00:00");
        let t = parse_time("2026-01-31T13:00:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-31T12:00:00+00:00");
        let ago = Utc::now() - parse_time("1h").unwrap();
        assert!((3599..=3601).contains(&ago.num_seconds()), "{ago}");
        let error = parse_time("yesterday").unwrap_err();
        assert!(error.contains("RFC 3339"), "{error}");
    }

    #[test]
    fn since_becomes_a_start_time() {
        assert_eq!(list_start(None).unwrap(), DeliverPolicy::All);
        let since = parse_time("2026-01-31T12:00:00.5Z").unwrap();
        let DeliverPolicy::ByStartTime { start_time } = list_start(Some(since)).unwrap() else {
            panic!("not by start time")
        };
        assert_eq!(start_time.unix_timestamp(), since.timestamp());
        assert_eq!(start_time.millisecond(), 500);
    }
}
