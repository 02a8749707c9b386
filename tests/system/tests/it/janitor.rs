//! Work items no runner will be handed again (what MaxDeliver or a nats-server 2.9 crash
//! leaves stored) do not linger once their run has moved on: the runner's janitor deletes
//! those, and keeps those whose run still waits for them.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use flexcore_contracts::subjects;
use flexcore_runner::worker::{janitor, CONSUMER};
use flexcore_system_tests::{Options, Stack};
use futures::StreamExt as _;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_items_no_runner_will_take_are_removed_once_their_run_moved_on() {
    let s = Stack::start(Options::default()).await;
    // The runners' consumer, but giving up on an item after one unacknowledged delivery.
    let stream = s.js.get_stream(subjects::WORK_STREAM).await.unwrap();
    let consumer: PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(CONSUMER.to_owned()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(1),
            max_deliver: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    for (name, kind) in [("x", "extractor"), ("y", "loader")] {
        s.ok(
            "plugin.register",
            json!({"name": name, "version": "1.0.0", "kind": kind, "module_digest": format!("sha256:{}", "a".repeat(64))}),
        )
        .await;
    }
    let pipeline = s
        .ok(
            "pipeline.create",
            json!({"name": "lingering", "owner": "o", "max_active_runs": 5,
                   "steps": [{"plugin": "x@1.0.0"}, {"plugin": "y@1.0.0"}]}),
        )
        .await["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let reply = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
        runs.push(reply["aggregate_id"].as_str().unwrap().to_owned());
    }
    // Both items are delivered once and never acknowledged: after AckWait they are given
    // up on (MaxDeliver), stored, and no runner will be handed them again.
    let mut taken = 0;
    while taken < 2 {
        let mut batch = consumer
            .fetch()
            .max_messages(2 - taken)
            .expires(Duration::from_secs(10))
            .messages()
            .await
            .unwrap();
        while let Some(message) = batch.next().await {
            message.unwrap();
            taken += 1;
        }
    }
    assert_eq!(taken, 2);
    flexcore_testkit::wait_until(Duration::from_secs(20), "both items given up on", || async {
        // A pull request makes the server look at the expired deliveries.
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_millis(300))
            .messages()
            .await
            .unwrap();
        if let Some(message) = batch.next().await {
            panic!("redelivered: {message:?}");
        }
        let info = consumer.get_info().await.unwrap();
        info.num_ack_pending == 0 && info.num_pending == 0 && info.delivered.stream_sequence >= 2
    })
    .await
    .unwrap();
    let stored = || async {
        s.js.get_stream(subjects::WORK_STREAM)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages
    };
    assert_eq!(stored().await, 2);

    // Both runs still wait for their first attempt: kept (their run timeout ends them).
    let api = s.api();
    let swept = janitor::sweep(&s.js, &api).await.unwrap();
    assert_eq!((swept.examined, swept.deleted, swept.kept), (2, 0, 2), "{swept:?}");

    // One run is cancelled: its item is moot and goes; the other stays.
    let position = s
        .ok("run.cancel", json!({"run_id": runs[0], "reason": "lingering"}))
        .await["global_position"]
        .as_u64()
        .unwrap();
    let view = s
        .query("run.get", json!({"id": runs[0], "min_position": position}))
        .await;
    assert_eq!(view["data"]["state"], "cancelled", "{view}");
    let swept = janitor::sweep(&s.js, &api).await.unwrap();
    assert_eq!((swept.examined, swept.deleted, swept.kept), (2, 1, 1), "{swept:?}");
    assert_eq!(stored().await, 1);
    let left =
        s.js.get_stream(subjects::WORK_STREAM)
            .await
            .unwrap()
            .get_last_raw_message_by_subject(&subjects::work_run(runs[1].parse().unwrap()))
            .await;
    assert!(left.is_ok(), "the waiting run's item is kept");
    s.stop().await;
}
