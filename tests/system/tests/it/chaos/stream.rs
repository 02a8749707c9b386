//! JetStream against the log: `FLEXCORE_EVENTS` holds every event exactly once, in the
//! log's reading order, with the headers and the body the relay must give it (the exact
//! bytes of `data`); and no work is left outstanding in `FLEXCORE_WORK`.

use std::time::Duration;

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::Context;
use flexcore_contracts::{envelope, subjects, EventEnvelope};
use flexcore_runner::worker::CONSUMER;
use futures::StreamExt as _;

use super::log::LogEvent;

/// The events stream's messages, first to last: (subject, header pairs, body).
async fn messages(js: &Context) -> Vec<(String, Vec<(String, String)>, Vec<u8>)> {
    let mut stream = js.get_stream(subjects::EVENTS_STREAM).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    if state.messages == 0 {
        return Vec::new();
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    while out.len() < state.messages as usize {
        let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .unwrap_or_else(|_| panic!("read {} of {} stream messages, then nothing", out.len(), state.messages))
            .unwrap()
            .unwrap();
        let headers = message
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .flat_map(|(name, values)| {
                let name = name.to_string();
                values.iter().map(move |v| (name.clone(), v.to_string()))
            })
            .collect();
        out.push((message.subject.to_string(), headers, message.payload.to_vec()));
    }
    out
}

/// Differences between `FLEXCORE_EVENTS` and `log` (empty when equal).
pub async fn equals_log(js: &Context, log: &[LogEvent]) -> Vec<String> {
    let messages = messages(js).await;
    let mut problems = Vec::new();
    if messages.len() != log.len() {
        problems.push(format!(
            "the stream holds {} events, the log {}",
            messages.len(),
            log.len()
        ));
    }
    for (i, ((subject, headers, body), event)) in messages.iter().zip(log).enumerate() {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let want_subject = subjects::event(&event.aggregate_type, event.aggregate_id, &event.event_type);
        let expected_headers = [
            (envelope::HEADER_MSG_ID, event.event_id.to_string()),
            (envelope::HEADER_GLOBAL_POSITION, event.position.to_string()),
            (envelope::HEADER_VERSION, event.version.to_string()),
            (envelope::HEADER_EVENT_TYPE, event.event_type.clone()),
            (envelope::HEADER_TRANSACTION_ID, event.transaction.to_string()),
        ];
        let mut wrong: Vec<String> = expected_headers
            .iter()
            .filter(|(name, want)| header(name) != Some(want.as_str()))
            .map(|(name, want)| format!("{name}: {:?} ≠ {want}", header(name)))
            .collect();
        if *subject != want_subject {
            wrong.push(format!("subject {subject} ≠ {want_subject}"));
        }
        match serde_json::from_slice::<EventEnvelope>(body) {
            Ok(env) => {
                let same = env.event_id == event.event_id
                    && env.event_type == event.event_type
                    && env.aggregate_type == event.aggregate_type
                    && env.aggregate_id == event.aggregate_id
                    && env.version as i64 == event.version
                    && env.global_position as i64 == event.position
                    && env.schema_version as i32 == event.schema_version
                    && env.recorded_at == event.recorded_at
                    && env.metadata == event.metadata;
                if !same {
                    wrong.push(format!("envelope {env:?}"));
                }
                if env.data.as_str() != event.data {
                    wrong.push(format!("data {} ≠ {}", env.data.as_str(), event.data));
                }
            }
            Err(e) => wrong.push(format!("body is not an envelope: {e}")),
        }
        if !wrong.is_empty() {
            problems.push(format!(
                "stream message {} ≠ log event {} ({} at {}): {wrong:?}",
                i + 1,
                event.event_id,
                event.event_type,
                event.position
            ));
            if problems.len() > 20 {
                problems.push("… (more left out)".to_owned());
                break;
            }
        }
    }
    problems
}

/// Work no runner has finished: the runners' consumer's pending plus unacknowledged
/// messages (the stream's own message count can include items below the ack floor that
/// nats-server 2.9 resurrects after a crash, which nobody will be handed again).
pub async fn outstanding_work(js: &Context) -> anyhow::Result<u64> {
    let stream = js.get_stream(subjects::WORK_STREAM).await?;
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer(CONSUMER)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let info = consumer.info().await?;
    Ok(info.num_pending + info.num_ack_pending as u64)
}

/// The replicas of the system's streams that are not current (on a single server:
/// none), as `stream: node (lag n)`.
pub async fn lagging_replicas(js: &Context) -> anyhow::Result<Vec<String>> {
    let mut lagging = Vec::new();
    for name in [subjects::EVENTS_STREAM, subjects::WORK_STREAM] {
        let mut stream = js.get_stream(name).await?;
        let info = stream.info().await?;
        for peer in info.cluster.iter().flat_map(|c| &c.replicas) {
            if !peer.current || peer.offline || peer.lag.unwrap_or(0) > 0 {
                lagging.push(format!(
                    "{name}: {} (lag {:?}, offline {})",
                    peer.name, peer.lag, peer.offline
                ));
            }
        }
    }
    Ok(lagging)
}
