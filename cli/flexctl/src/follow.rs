//! Following a JetStream stream from the CLI (`events tail`, `events list`, `run logs
//! --follow`): ordered consumers, a [`Watch`] on the NATS connection that says when it is
//! lost and gives up after `--reconnect-timeout`, and [`Follow`], which makes a consumer
//! the server forgot again from where it was.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, consumer::pull::Ordered};
use futures::{Stream, StreamExt as _};
use tokio::time::Instant;

/// How long a following command waits for a lost NATS connection to come back, unless
/// told otherwise (`--reconnect-timeout`).
pub const RECONNECT_TIMEOUT: &str = "30s";

/// An ordered (ephemeral) pull consumer.
pub type OrderedConsumer = jetstream::consumer::Consumer<jetstream::consumer::pull::OrderedConfig>;

/// An ordered consumer on `stream` of the messages matching `filter`, from `deliver`.
pub async fn ordered_consumer(
    stream: &jetstream::stream::Stream,
    filter: &str,
    deliver: DeliverPolicy,
) -> anyhow::Result<OrderedConsumer> {
    stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy: deliver,
            ..Default::default()
        })
        .await
        .context("creating an ordered consumer")
}

/// What [`Watch::next`] got.
#[derive(Debug)]
pub enum Next<M> {
    /// The next message.
    Message(M),
    /// No message for the idle time asked for.
    Idle,
    /// The stream ended.
    End,
    /// The stream failed while connected (e.g. the server forgot the consumer).
    Broken(anyhow::Error),
}

/// An ordered consumer read under a [`Watch`], created again from the position after the
/// last message read when the server forgot it (a restarted server forgets the consumers
/// it kept in memory, and async-nats then reports "consumer not found").
pub struct Follow {
    stream: jetstream::stream::Stream,
    filter: String,
    /// Where to start again when nothing was read yet.
    deliver: DeliverPolicy,
    /// The stream position after the last message read.
    next_sequence: Option<u64>,
    messages: Ordered,
    watch: Watch,
    broken_in_a_row: u32,
}

/// Consumers created again in a row, with no message in between, before giving up.
const MAX_RECREATED: u32 = 3;

impl Follow {
    /// Reads `consumer` (made on `stream` with `filter` and `deliver`) under `watch`.
    pub async fn new(
        stream: jetstream::stream::Stream,
        filter: String,
        deliver: DeliverPolicy,
        consumer: OrderedConsumer,
        watch: Watch,
    ) -> anyhow::Result<Self> {
        let messages = consumer.messages().await.context("reading the stream")?;
        Ok(Self {
            stream,
            filter,
            deliver,
            next_sequence: None,
            messages,
            watch,
            broken_in_a_row: 0,
        })
    }

    /// Whether the connection is up now.
    pub fn connected(&self) -> bool {
        self.watch.connected()
    }

    /// The next message ([`Watch::next`]), never [`Next::Broken`]: a broken consumer is
    /// made again, [`MAX_RECREATED`] times in a row at most.
    pub async fn next(&mut self, idle: Option<Duration>) -> anyhow::Result<Next<jetstream::Message>> {
        loop {
            match self.watch.next(&mut self.messages, idle).await? {
                Next::Message(message) => {
                    self.broken_in_a_row = 0;
                    if let Ok(info) = message.info() {
                        self.next_sequence = Some(info.stream_sequence + 1);
                    }
                    return Ok(Next::Message(message));
                }
                Next::Broken(error) if self.broken_in_a_row < MAX_RECREATED => {
                    self.broken_in_a_row += 1;
                    let deliver = match self.next_sequence {
                        Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
                        None => self.deliver,
                    };
                    tracing::debug!(error = format!("{error:#}"), "reading on with a new consumer");
                    let consumer = ordered_consumer(&self.stream, &self.filter, deliver).await?;
                    self.messages = consumer.messages().await.context("reading the stream")?;
                }
                Next::Broken(error) => return Err(error),
                other => return Ok(other),
            }
        }
    }
}

/// What to do about the connection at a check, given how long it has been lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Connected, as before.
    Fine,
    /// Just lost: say so.
    Lost,
    /// Still lost, within the timeout.
    Waiting,
    /// Back after being lost: say so.
    Back,
    /// Lost for longer than the timeout: give up.
    GiveUp,
}

/// The pure decision of [`Watch`]: `connected` now, lost since `lost_for` ago (if it was).
pub fn verdict(connected: bool, lost_for: Option<Duration>, timeout: Duration) -> Verdict {
    match (connected, lost_for) {
        (true, None) => Verdict::Fine,
        (true, Some(_)) => Verdict::Back,
        (false, None) => Verdict::Lost,
        (false, Some(lost)) if lost >= timeout => Verdict::GiveUp,
        (false, Some(_)) => Verdict::Waiting,
    }
}

/// Watches the NATS connection of a command that follows a stream: the stream itself
/// just waits while the server is away, so the watch says on stderr that the connection
/// was lost, and fails once it has been lost for longer than the reconnect timeout.
#[derive(Debug)]
pub struct Watch {
    client: async_nats::Client,
    url: String,
    timeout: Duration,
    lost_since: Option<Instant>,
}

/// How often the connection state is looked at.
const WATCH_EVERY: Duration = Duration::from_millis(250);

impl Watch {
    /// A watch on `client`, connected to `url` (shown without its password).
    pub fn new(client: &async_nats::Client, url: &str, timeout: Duration) -> Self {
        Self {
            client: client.clone(),
            url: flexcore_config::url_text::redact(url),
            timeout,
            lost_since: None,
        }
    }

    /// Whether the connection is up now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn check(&mut self) -> anyhow::Result<()> {
        let lost_for = self.lost_since.map(|since| since.elapsed());
        match verdict(self.connected(), lost_for, self.timeout) {
            Verdict::Fine | Verdict::Waiting => {}
            Verdict::Lost => {
                eprintln!(
                    "flexctl: lost the connection to NATS at {}, reconnecting (giving up after {})",
                    self.url,
                    crate::duration::format_duration(self.timeout)
                );
                self.lost_since = Some(Instant::now());
            }
            Verdict::Back => {
                eprintln!("flexctl: reconnected to NATS at {}", self.url);
                self.lost_since = None;
            }
            Verdict::GiveUp => anyhow::bail!(
                "lost the connection to NATS at {} and could not reconnect within {} (--reconnect-timeout)",
                self.url,
                crate::duration::format_duration(self.timeout)
            ),
        }
        Ok(())
    }

    /// The next item of `stream`; [`Next::Idle`] after `idle` without one (when given).
    /// Errors of the stream while the connection is lost are the outage, not the end;
    /// others end the command.
    pub async fn next<M, E>(
        &mut self,
        stream: &mut (impl Stream<Item = Result<M, E>> + Unpin),
        idle: Option<Duration>,
    ) -> anyhow::Result<Next<M>>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let idle_at = idle.map(|idle| Instant::now() + idle);
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let idle_sleep = async {
                match idle_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                item = stream.next() => match item {
                    None => return Ok(Next::End),
                    Some(Ok(message)) => {
                        self.check()?;
                        return Ok(Next::Message(message));
                    }
                    Some(Err(error)) if !self.connected() => {
                        tracing::debug!(%error, "reading the stream while disconnected");
                        self.check()?;
                    }
                    Some(Err(error)) => {
                        return Ok(Next::Broken(anyhow::Error::new(error).context("reading the stream")));
                    }
                },
                _ = tick.tick() => self.check()?,
                () = idle_sleep => return Ok(Next::Idle),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_announced_then_given_up_on_after_the_timeout() {
        let timeout = Duration::from_secs(30);
        assert_eq!(verdict(true, None, timeout), Verdict::Fine);
        assert_eq!(verdict(false, None, timeout), Verdict::Lost);
        assert_eq!(verdict(false, Some(Duration::from_secs(29)), timeout), Verdict::Waiting);
        assert_eq!(verdict(false, Some(timeout), timeout), Verdict::GiveUp);
        assert_eq!(verdict(true, Some(Duration::from_secs(29)), timeout), Verdict::Back);
    }
}
