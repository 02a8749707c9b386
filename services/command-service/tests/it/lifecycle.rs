use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use flexcore_contracts::EventEnvelope;
use futures::StreamExt;
use serde_json::json;

use crate::spawn_app;

#[tokio::test]
async fn a_raw_request_creates_a_pipeline_whose_event_reaches_jetstream() {
    let mut app = spawn_app().await;
    app.register_plugins().await;
    let body = br#"{"name":"orders","owner":"data-team","tags":["sales"],"steps":[{"plugin":"csv@1.0.0","config":{}},{"plugin":"jsonl@1.0.0","config":{"path":"/out"}}]}"#;
    let reply = app.send_raw("flexcore.cmd.pipeline.create", &body[..]).await;
    assert_eq!(reply["ok"], json!(true), "{reply}");
    assert_eq!(reply["version"], json!(1));
    assert_eq!(reply["events"][0]["type"], json!("pipeline.created"));
    let id = reply["aggregate_id"].as_str().unwrap().to_owned();
    let position = reply["global_position"].as_u64().unwrap();
    assert!(position > 0);

    // The event is in Postgres at that position.
    let (event_type, aggregate_id): (String, uuid::Uuid) =
        sqlx::query_as("SELECT event_type, aggregate_id FROM events WHERE global_position = $1")
            .bind(i64::try_from(position).unwrap())
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (event_type.as_str(), aggregate_id.to_string()),
        ("pipeline.created", id.clone())
    );

    // And on FLEXCORE_EVENTS under the documented subject with the documented headers.
    let js = jetstream::new(app.client.clone());
    let stream = js.get_stream("FLEXCORE_EVENTS").await.unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: format!("flexcore.evt.pipeline.{id}.created"),
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let headers = message.headers.clone().unwrap();
    let envelope: EventEnvelope = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        envelope.event_id.to_string(),
        reply["events"][0]["event_id"].as_str().unwrap()
    );
    assert_eq!(
        headers.get("Nats-Msg-Id").unwrap().as_str(),
        envelope.event_id.to_string()
    );
    assert_eq!(
        headers.get("Flexcore-Global-Position").unwrap().as_str(),
        position.to_string()
    );
    assert_eq!(headers.get("Flexcore-Version").unwrap().as_str(), "1");
    assert_eq!(headers.get("Flexcore-Schema-Version").unwrap().as_str(), "1");
    let data = envelope.data.to_value();
    assert_eq!(data["name"], json!("orders"));
    assert_eq!(data["definition"]["steps"][1]["kind"], json!("loader"));
    app.stop().await;
}

#[tokio::test]
async fn a_run_goes_through_its_lifecycle_and_checkpoints_the_pipeline_bookmark() {
    let mut app = spawn_app().await;
    app.register_plugins().await;
    let pipeline = app.create_pipeline("nightly").await;
    let run = app
        .ok("run.request", json!({"pipeline_id": pipeline, "trigger": "manual"}))
        .await;
    let run_id = run["aggregate_id"].as_str().unwrap().to_owned();
    // The relay hands the requested attempt to the runners on FLEXCORE_WORK.
    let work = jetstream::new(app.client.clone())
        .get_stream("FLEXCORE_WORK")
        .await
        .unwrap();
    let subject = format!("flexcore.work.run.{run_id}");
    flexcore_testkit::wait_until(Duration::from_secs(10), "work item published", || async {
        work.get_last_raw_message_by_subject(&subject).await.is_ok()
    })
    .await
    .unwrap();
    let item = work.get_last_raw_message_by_subject(&subject).await.unwrap();
    let item: flexcore_contracts::work::WorkItem = serde_json::from_slice(&item.payload).unwrap();
    assert_eq!(
        (item.run_id.to_string(), item.attempt, item.pipeline_id),
        (run_id.clone(), 1, pipeline)
    );
    // max_active_runs = 1: a second request is refused while the first is active.
    let second = app.send("run.request", json!({"pipeline_id": pipeline})).await;
    assert_eq!(second["error"]["code"], json!("conflict"), "{second}");
    app.ok(
        "run.claim",
        json!({"run_id": run_id, "attempt": 1, "runner_id": "runner-a"}),
    )
    .await;
    let cp = app
        .ok(
            "run.checkpoint",
            json!({"run_id": run_id, "attempt": 1, "state": {"bookmarks": {"orders": 42}}, "counters": {"orders": 42}}),
        )
        .await;
    assert_eq!(
        cp["events"].as_array().unwrap().len(),
        2,
        "run and pipeline events: {cp}"
    );
    let stale = app.send("run.succeed", json!({"run_id": run_id, "attempt": 2})).await;
    assert_eq!(stale["error"]["code"], json!("conflict"), "{stale}");
    app.ok(
        "run.succeed",
        json!({"run_id": run_id, "attempt": 1, "counters": {"orders": 42}}),
    )
    .await;
    // The slot is free again, and the next run resumes from the committed bookmark.
    let next = app.ok("run.request", json!({"pipeline_id": pipeline})).await;
    let next_id = next["aggregate_id"].as_str().unwrap();
    app.ok(
        "run.claim",
        json!({"run_id": next_id, "attempt": 1, "runner_id": "runner-b"}),
    )
    .await;
    let data: serde_json::Value =
        sqlx::query_scalar("SELECT data FROM events WHERE aggregate_id = $1::uuid AND event_type = 'run.claimed'")
            .bind(next_id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(data["resume_state"], json!({"bookmarks": {"orders": 42}}));
    app.stop().await;
}

/// Shutdown while commands are in flight: every command the service received is
/// answered (and committed); later ones find no responder at once. None times out.
#[tokio::test]
async fn shutdown_answers_every_command_already_received() {
    let mut app = spawn_app().await;
    app.register_plugins().await;
    let pipeline = app.create_pipeline("drain").await;
    let (first_reply_tx, mut first_reply) = tokio::sync::mpsc::channel::<()>(200);
    let requests: Vec<_> = (0..200)
        .map(|i| {
            let client = app.client.clone();
            let first_reply_tx = first_reply_tx.clone();
            let body = json!({"pipeline_id": pipeline, "state": {"n": i}});
            tokio::spawn(async move {
                let r = tokio::time::timeout(
                    Duration::from_secs(8),
                    flexcore_testkit::nats::signed_request(
                        &client,
                        "flexcore.cmd.pipeline.commit_state",
                        serde_json::to_vec(&body).unwrap(),
                    ),
                )
                .await;
                let _ = first_reply_tx.send(()).await;
                r
            })
        })
        .collect();
    // Stop as soon as the first answer is back: the rest are queued or in flight.
    first_reply.recv().await.unwrap();
    app.shutdown.cancel();
    let mut answered = 0;
    let mut no_responders = 0;
    for r in requests {
        match r.await.unwrap() {
            Ok(Ok(reply)) => {
                let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
                assert_eq!(v["ok"], json!(true), "{v}");
                answered += 1;
            }
            Ok(Err(e))
                if e.downcast_ref::<async_nats::RequestError>()
                    .is_some_and(|e| e.kind() == async_nats::RequestErrorKind::NoResponders) =>
            {
                no_responders += 1
            }
            Ok(Err(e)) => panic!("request failed: {e}"),
            Err(_) => panic!("a request received by the service was never answered"),
        }
    }
    app.task.take().unwrap().await.unwrap().unwrap();
    let committed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'pipeline.state_committed'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(committed, answered, "answered commands are exactly the committed ones");
    assert!(answered > 1, "answered {answered}, no responders {no_responders}");
}

/// A registration naming a stored module larger than `runner.max_module_bytes` (here
/// 1 MiB) is refused with the sizes: runners would never run it. Stored by hand, as
/// someone bypassing flexctl's own check would. One that fits, or one not stored yet, is
/// accepted.
#[tokio::test]
async fn a_module_over_the_runners_limit_cannot_be_registered() {
    let app = spawn_app().await;
    let js = async_nats::jetstream::new(app.client.clone());
    let big = flexcore_plugin_store::upload_at_most(&js, &vec![1u8; (1 << 20) + 1], u64::MAX)
        .await
        .unwrap();
    let refused = app
        .send(
            "plugin.register",
            json!({"name": "big", "version": "1.0.0", "kind": "extractor", "module_digest": big.to_string()}),
        )
        .await;
    assert_eq!(refused["error"]["code"], json!("payload_too_large"), "{refused}");
    assert_eq!(refused["error"]["details"]["size"], json!((1 << 20) + 1), "{refused}");
    assert_eq!(refused["error"]["details"]["limit"], json!(1 << 20), "{refused}");
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(written, 0, "a refused command wrote events");

    let small = flexcore_plugin_store::upload(&js, &vec![1u8; 1 << 10]).await.unwrap();
    for (name, digest) in [
        ("small", small.to_string()),
        ("later", format!("sha256:{}", "d".repeat(64))),
    ] {
        app.ok(
            "plugin.register",
            json!({"name": name, "version": "1.0.0", "kind": "extractor", "module_digest": digest}),
        )
        .await;
    }
}
