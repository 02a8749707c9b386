//! `flexctl run start` against a real command service: an idempotency key requests its
//! run once however often it is repeated, and a request nobody answers names the run it
//! may have created and the key that repeats it safely.

use std::time::Duration;

use flexctl::cli::Output;
use flexctl::run::{request_ids, start_with, StartRequest};
use futures::StreamExt as _;
use serde_json::json;
use uuid::Uuid;

use crate::{operator_api, spawn_service};

fn request(pipeline_id: Uuid, key: &str) -> StartRequest<'_> {
    StartRequest {
        pipeline: "p",
        pipeline_id,
        idempotency_key: key,
        follow: false,
        timeout: Duration::from_secs(10),
    }
}

#[tokio::test]
async fn a_repeated_run_start_with_the_same_key_requests_one_run() {
    let service = spawn_service().await;
    let client = service.nats.client().await.unwrap();
    let api = operator_api(client);
    let digest = format!("sha256:{}", "ab".repeat(32));
    for (plugin, kind) in [("csv", "extractor"), ("jsonl", "loader")] {
        api.command(
            "plugin.register",
            &json!({"name": plugin, "version": "1.0.0", "kind": kind, "module_digest": digest}),
        )
        .await
        .unwrap();
    }
    let pipeline = api
        .command(
            "pipeline.create",
            &json!({"name": "p", "owner": "o", "max_active_runs": 5,
                    "steps": [{"plugin": "csv@1.0.0"}, {"plugin": "jsonl@1.0.0"}]}),
        )
        .await
        .unwrap()
        .aggregate_id;

    let first = start_with(&api, &request(pipeline, "nightly-7"), Output::Json)
        .await
        .unwrap();
    assert_eq!(first.run_id, request_ids(pipeline, "nightly-7").0);
    assert_eq!(first.state, "requested");
    // The retry after a lost reply: the same command, answered with the first reply.
    let again = start_with(&api, &request(pipeline, "nightly-7"), Output::Json)
        .await
        .unwrap();
    assert_eq!(again.run_id, first.run_id);
    let other = start_with(&api, &request(pipeline, "nightly-8"), Output::Json)
        .await
        .unwrap();
    assert_ne!(other.run_id, first.run_id);

    let requested: Vec<(Uuid,)> =
        sqlx::query_as("SELECT aggregate_id FROM events WHERE event_type = 'run.requested' ORDER BY aggregate_id")
            .fetch_all(&service.db.pool)
            .await
            .unwrap();
    let mut expected = vec![(first.run_id,), (other.run_id,)];
    expected.sort();
    assert_eq!(requested, expected, "one run per key, whatever the repeats");
    service.shutdown.cancel();
}

#[tokio::test]
async fn an_unanswered_run_start_names_the_run_and_the_key_to_repeat_it_with() {
    // A command service that takes requests and never answers (stuck, or its reply lost).
    let nats = flexcore_testkit::TestNats::start().await.unwrap();
    let stuck = nats.client().await.unwrap();
    let mut requests = stuck.subscribe("flexcore.cmd.>").await.unwrap();
    let seen = tokio::spawn(async move {
        let mut n = 0;
        while requests.next().await.is_some() {
            n += 1;
        }
        n
    });
    let identity = flexcore_testkit::nats::test_identity("flexctl").unwrap();
    let client = flexcore_client::Client::new(nats.client().await.unwrap())
        .with_identity(identity)
        .with_timeout(Duration::from_millis(100));
    let api = flexctl::api::Api::new(client);
    let pipeline = Uuid::now_v7();

    let error = start_with(&api, &request(pipeline, "k-42"), Output::Json)
        .await
        .unwrap_err();
    let run_id = request_ids(pipeline, "k-42").0;
    let text = format!("{error:#}");
    assert!(text.contains(&format!("flexctl run show {run_id}")), "{text}");
    assert!(text.contains("flexctl run start p --idempotency-key k-42"), "{text}");
    assert!(text.contains("did not answer in time"), "the cause is kept: {text}");
    let json = flexctl::error::to_json(&error);
    assert_eq!(json["error"]["code"], "unavailable", "{json}");
    assert_eq!(
        json["error"]["details"],
        json!({"reason": "timed_out", "run_id": run_id, "idempotency_key": "k-42"}),
        "{json}"
    );

    // Without a key, one is drawn, and the error gives it.
    let error = flexctl::run::start(&api, pipeline, false, Duration::from_secs(10), Output::Text)
        .await
        .unwrap_err();
    let details = flexctl::error::to_json(&error)["error"]["details"].clone();
    let key = details["idempotency_key"].as_str().unwrap();
    assert_eq!(details["run_id"], json!(request_ids(pipeline, key).0), "{details}");
    seen.abort();
}
