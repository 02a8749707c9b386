use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use flexcore_contracts::EventEnvelope;
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::json;
use uuid::Uuid;

use crate::spawn_app;

/// NATS restarts while clients send commands. Each command either gets an ok reply or
/// fails (error reply or no reply); every event of an acknowledged command is in
/// Postgres and eventually on FLEXCORE_EVENTS.
#[tokio::test]
async fn nats_restart_loses_nothing_acknowledged() {
    let mut app = spawn_app().await;
    app.register_plugins().await;
    let pipeline = app.create_pipeline("outage").await;
    let acknowledged: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let failed = Arc::new(Mutex::new(0usize));
    let stop = tokio_util::sync::CancellationToken::new();
    let senders: Vec<_> = (0..4)
        .map(|w| {
            let client = app.client.clone();
            let acknowledged = acknowledged.clone();
            let failed = failed.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.is_cancelled() {
                    i += 1;
                    let body = json!({"pipeline_id": pipeline, "state": {"writer": w, "n": i}});
                    let reply = tokio::time::timeout(
                        Duration::from_secs(2),
                        flexcore_testkit::nats::signed_request(
                            &client,
                            "flexcore.cmd.pipeline.commit_state",
                            serde_json::to_vec(&body).unwrap(),
                        ),
                    )
                    .await;
                    match reply {
                        Ok(Ok(m)) => {
                            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                            if v["ok"] == json!(true) {
                                acknowledged
                                    .lock()
                                    .push(v["events"][0]["event_id"].as_str().unwrap().parse().unwrap());
                            } else {
                                *failed.lock() += 1;
                            }
                        }
                        _ => {
                            *failed.lock() += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            })
        })
        .collect();
    flexcore_testkit::wait_until(Duration::from_secs(10), "commands flowing", || async {
        acknowledged.lock().len() > 20
    })
    .await
    .unwrap();
    app.nats.stop();
    let before_outage = acknowledged.lock().len();
    tokio::time::sleep(Duration::from_millis(1500)).await; // the outage itself
    app.nats.restart().await.unwrap();
    flexcore_testkit::wait_until(Duration::from_secs(30), "commands flowing again", || async {
        acknowledged.lock().len() > before_outage + 20
    })
    .await
    .unwrap();
    stop.cancel();
    for s in senders {
        s.await.unwrap();
    }
    let acked: HashSet<Uuid> = acknowledged.lock().iter().copied().collect();
    // Every acknowledged event is in Postgres…
    let stored: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM events")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    let stored: HashSet<Uuid> = stored.into_iter().collect();
    assert!(acked.is_subset(&stored), "acknowledged events missing from Postgres");
    // …and reaches JetStream.
    let js = jetstream::new(app.client.clone());
    let stream = js.get_stream("FLEXCORE_EVENTS").await.unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut published = HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !acked.is_subset(&published) && std::time::Instant::now() < deadline {
        if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(2), messages.next()).await {
            let e: EventEnvelope = serde_json::from_slice(&m.payload).unwrap();
            published.insert(e.event_id);
        }
    }
    let missing = acked.difference(&published).count();
    assert_eq!(missing, 0, "{missing} acknowledged events never reached JetStream");
    tracing::info!(acknowledged = acked.len(), failed = *failed.lock(), "outage test done");
    app.stop().await;
}
