use std::time::{Duration, Instant};

use flexcore_contracts::model::DirAccess;
use flexcore_runner::worker::SecretSource;
use serde_json::json;

use crate::{dir_grant, runner_config, stack};

fn env_secrets() -> SecretSource {
    SecretSource::Env {
        prefix: "FLEXCORE_TEST_SECRET_".into(),
    }
}

/// CSV extractor → mapper → JSONL loader, run by command: the output file, per-stream
/// counts on `run.succeeded`, and a second run that reads only the new rows.
#[tokio::test]
async fn a_three_step_pipeline_runs_and_resumes_from_its_bookmark() {
    let s = stack(Some(runner_config(Duration::from_secs(10), env_secrets()))).await;
    let input = tempfile::tempdir().unwrap();
    let output = tempfile::tempdir().unwrap();
    std::fs::write(
        input.path().join("orders.csv"),
        "id,amount,customer\n1,10,ada\n2,20,bob\n",
    )
    .unwrap();
    let csv = s
        .register(
            "flexcore-plugin-csv",
            "csv",
            "extractor",
            dir_grant(input.path(), "/input", DirAccess::ReadOnly),
            json!({}),
        )
        .await;
    let mapper = s
        .register_plain("flexcore-plugin-mapper", "mapper", "transformer")
        .await;
    let jsonl = s
        .register(
            "flexcore-plugin-jsonl",
            "jsonl",
            "loader",
            dir_grant(output.path(), "/output", DirAccess::ReadWrite),
            json!({}),
        )
        .await;
    let pipeline = s
        .pipeline(json!({"name": "orders", "owner": "data", "steps": [
            {"plugin": csv, "config": {"path": "/input/orders.csv", "replication_key": "id"}},
            {"plugin": mapper, "config": {"streams": {"orders": {"rename": {"customer": "client"}}}}},
            {"plugin": jsonl, "config": {"directory": "/output"}}
        ]}))
        .await;

    let run = s
        .ok("run.request", json!({"pipeline_id": pipeline, "trigger": "manual"}))
        .await;
    let run_id = run["aggregate_id"].as_str().unwrap();
    let done = s.wait_event(run_id, "run.succeeded", Duration::from_secs(60)).await;
    assert_eq!(done["counters"], json!({"orders": 2}), "{done}");
    let out = std::fs::read_to_string(output.path().join("orders.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["client"], json!("ada"));
    assert!(lines[0].get("customer").is_none());
    assert!(
        !s.run_events(run_id, "run.checkpointed").await.is_empty(),
        "the loader's STATE was committed"
    );

    // New rows arrive; the next run resumes from the committed bookmark.
    std::fs::write(
        input.path().join("orders.csv"),
        "id,amount,customer\n1,10,ada\n2,20,bob\n3,30,cy\n",
    )
    .unwrap();
    let run2 = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
    let run2_id = run2["aggregate_id"].as_str().unwrap();
    let done2 = s.wait_event(run2_id, "run.succeeded", Duration::from_secs(60)).await;
    assert_eq!(
        done2["counters"],
        json!({"orders": 1}),
        "only the new row is read: {done2}"
    );
    let out = std::fs::read_to_string(output.path().join("orders.jsonl")).unwrap();
    assert_eq!(out.lines().count(), 3, "{out}");
    s.shutdown.cancel();
}

/// `run.cancel` during a run: the run is cancelled and the runner stops its plugins and
/// frees the slot within about a second.
#[tokio::test]
async fn cancel_stops_a_running_pipeline_within_a_second() {
    let s = stack(Some(runner_config(Duration::from_secs(10), env_secrets()))).await;
    let sleepy = s
        .register_plain("flexcore-plugin-misbehave", "sleepy", "extractor")
        .await;
    let discard = s.register_plain("flexcore-plugin-discard", "discard", "loader").await;
    let pipeline = s
        .pipeline(json!({"name": "sleepy", "owner": "o", "steps": [
            {"plugin": sleepy, "config": {"mode": "sleep"}}, {"plugin": discard}]}))
        .await;
    let run = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
    let run_id = run["aggregate_id"].as_str().unwrap();
    s.wait_event(run_id, "run.claimed", Duration::from_secs(30)).await;
    let consumer_busy = || async {
        let mut c: async_nats::jetstream::consumer::PullConsumer =
            s.js.get_stream("FLEXCORE_WORK")
                .await
                .unwrap()
                .get_consumer("flexcore-runner")
                .await
                .unwrap();
        c.info().await.unwrap().num_ack_pending
    };
    assert_eq!(consumer_busy().await, 1, "the attempt is running");
    let cancelled_at = Instant::now();
    s.ok("run.cancel", json!({"run_id": run_id, "reason": "test"})).await;
    flexcore_testkit::wait_until(Duration::from_secs(5), "the runner let go of the attempt", || async {
        consumer_busy().await == 0
    })
    .await
    .unwrap();
    let stopped = cancelled_at.elapsed();
    assert!(stopped < Duration::from_millis(1500), "stopped after {stopped:?}");
    assert!(
        s.run_events(run_id, "run.failed").await.is_empty(),
        "a cancelled run is not reported as failed"
    );
    s.shutdown.cancel();
}

/// The work item of an attempt that already succeeded, delivered again to the same runner
/// (as JetStream does when the runner's acknowledgement was lost in a NATS outage), is
/// dropped: the attempt is not run a second time and the loader receives nothing twice.
#[tokio::test]
async fn a_finished_attempts_work_delivered_again_is_not_run_again() {
    let s = stack(Some(runner_config(Duration::from_secs(10), env_secrets()))).await;
    let output = tempfile::tempdir().unwrap();
    let generator = s.register_plain("flexcore-plugin-generator", "gen", "extractor").await;
    let jsonl = s
        .register(
            "flexcore-plugin-jsonl",
            "jsonl",
            "loader",
            dir_grant(output.path(), "/output", DirAccess::ReadWrite),
            json!({}),
        )
        .await;
    let pipeline = s
        .pipeline(json!({"name": "once", "owner": "o", "steps": [
            {"plugin": generator, "config": {"records": 5}},
            {"plugin": jsonl, "config": {"directory": "/output", "append": true}}]}))
        .await;
    let run = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
    let run_id = run["aggregate_id"].as_str().unwrap();
    s.wait_event(run_id, "run.succeeded", Duration::from_secs(60)).await;
    let lines = || {
        std::fs::read_dir(output.path())
            .unwrap()
            .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap().lines().count())
            .sum::<usize>()
    };
    assert_eq!(lines(), 5);

    // The same item again, on the runners' consumer.
    let item = flexcore_contracts::work::WorkItem {
        run_id: run_id.parse().unwrap(),
        attempt: 1,
        pipeline_id: pipeline.parse().unwrap(),
        correlation_id: None,
    };
    let subject = flexcore_contracts::subjects::work_run(item.run_id);
    let ack =
        s.js.publish(subject, serde_json::to_vec(&item).unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
    let work = s.js.get_stream("FLEXCORE_WORK").await.unwrap();
    flexcore_testkit::wait_until(Duration::from_secs(30), "the item handled", || async {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            work.get_consumer(flexcore_runner::worker::CONSUMER).await.unwrap();
        let info = consumer.info().await.unwrap();
        info.ack_floor.stream_sequence >= ack.sequence && info.num_ack_pending == 0
    })
    .await
    .unwrap();
    assert_eq!(lines(), 5, "the loader received the records again");
    assert_eq!(s.run_events(run_id, "run.claimed").await.len(), 1);
    s.shutdown.cancel();
}

/// A module whose stored bytes were tampered with is refused with a digest error.
#[tokio::test]
async fn a_tampered_module_is_refused_with_a_digest_error() {
    let s = stack(Some(runner_config(Duration::from_secs(10), env_secrets()))).await;
    let generator = s.register_plain("flexcore-plugin-generator", "gen", "extractor").await;
    let discard = s.register_plain("flexcore-plugin-discard", "discard", "loader").await;
    let digest = flexcore_plugin_store::digest_of(&crate::wasm("flexcore-plugin-generator"));
    let store = flexcore_plugin_store::bucket(&s.js).await.unwrap();
    let mut evil: &[u8] = b"\0asm\x01\0\0\0";
    store.put(digest.as_str(), &mut evil).await.unwrap();
    let pipeline = s
        .pipeline(json!({"name": "gen", "owner": "o", "steps": [
            {"plugin": generator, "config": {"records": 10}}, {"plugin": discard}]}))
        .await;
    let run = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
    let failed = s
        .wait_event(
            run["aggregate_id"].as_str().unwrap(),
            "run.failed",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(failed["error"]["code"], json!("digest"), "{failed}");
    assert!(
        failed["error"]["message"].as_str().unwrap().contains("tampered"),
        "{failed}"
    );
    s.shutdown.cancel();
}

/// Kill -9 a runner mid-run: its lease lapses, the stale attempt is timed out (by the
/// scheduler, whose heartbeats stopped, or by the runner that receives the redelivered
/// work), the scheduler retries after the back-off, and the next attempt runs from the last
/// committed state; the stale attempt's late commands are refused.
#[tokio::test]
async fn a_killed_runner_is_replaced_and_the_next_attempt_resumes() {
    let s = stack(None).await;
    s.spawn_scheduler().await;
    let generator = s.register_plain("flexcore-plugin-generator", "gen", "extractor").await;
    let discard = s.register_plain("flexcore-plugin-discard", "discard", "loader").await;
    let pipeline = s
        .pipeline(
            json!({"name": "long", "owner": "o", "retry": {"initial_backoff_seconds": 1}, "steps": [
            {"plugin": generator, "config": {"records": 200_000_000u64, "state_every": 20_000}}, {"plugin": discard}]}),
        )
        .await;
    let spawn_runner = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_flexcore-runner"))
            .envs(s.nats.env_for("runner"))
            .env("FLEXCORE__RUNNER__LEASE_SECONDS", "2")
            .env("FLEXCORE__TELEMETRY__LOG_FORMAT", "text")
            .env("FLEXCORE_CONFIG_DIR", crate::workspace().join("config"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = spawn_runner();
    let run = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
    let run_id = run["aggregate_id"].as_str().unwrap();
    s.wait_event(run_id, "run.checkpointed", Duration::from_secs(60)).await;
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();

    let mut second = spawn_runner();
    flexcore_testkit::wait_until(Duration::from_secs(60), "attempt 2 claimed", || async {
        s.run_events(run_id, "run.claimed")
            .await
            .iter()
            .any(|c| c["attempt"] == json!(2))
    })
    .await
    .unwrap();
    let timed_out = s.run_events(run_id, "run.timed_out").await;
    assert_eq!(timed_out[0]["attempt"], json!(1));
    assert_eq!(timed_out[0]["reason"], json!("lease_expired"));
    let last_state = s.run_events(run_id, "run.checkpointed").await.last().unwrap()["state"].clone();
    let claim2 = s
        .run_events(run_id, "run.claimed")
        .await
        .into_iter()
        .find(|c| c["attempt"] == json!(2))
        .unwrap();
    assert_eq!(
        claim2["resume_state"], last_state,
        "attempt 2 resumes from attempt 1's last committed state"
    );
    // The dead attempt's late commands are fenced off.
    let late = s
        .send(
            "run.checkpoint",
            json!({"run_id": run_id, "attempt": 1, "state": {"late": true}}),
        )
        .await;
    assert_eq!(late["error"]["code"], json!("conflict"), "{late}");
    s.ok("run.cancel", json!({"run_id": run_id})).await;
    second.kill().unwrap();
    second.wait().unwrap();
    s.shutdown.cancel();
}

/// A checkpoint the command service refuses for its content (here a STATE holding
/// U+0000, which no command may carry) fails the attempt for good, naming the refusal;
/// it is not taken for a fenced attempt (which would report nothing, leave the run
/// running until its lease lapsed, and run it again).
#[tokio::test]
async fn a_refused_checkpoint_fails_the_run_saying_why() {
    use std::os::unix::fs::PermissionsExt as _;
    let s = stack(Some(runner_config(Duration::from_secs(10), env_secrets()))).await;
    let dir = tempfile::tempdir().unwrap();
    let tap = dir.path().join("tap.sh");
    std::fs::write(
        &tap,
        "#!/bin/sh\n\
         echo '{\"type\":\"SCHEMA\",\"stream\":\"rows\",\"schema\":{\"type\":\"object\"},\"key_properties\":[]}'\n\
         echo '{\"type\":\"RECORD\",\"stream\":\"rows\",\"record\":{\"id\":1}}'\n\
         echo '{\"type\":\"STATE\",\"value\":{\"bookmark\":\"a\\u0000b\"}}'\n",
    )
    .unwrap();
    std::fs::set_permissions(&tap, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.ok(
        "plugin.register",
        json!({"name": "nul-tap", "version": "1.0.0", "kind": "extractor", "runtime": "process",
               "executable": tap.display().to_string()}),
    )
    .await;
    let output = tempfile::tempdir().unwrap();
    let jsonl = s
        .register(
            "flexcore-plugin-jsonl",
            "jsonl",
            "loader",
            dir_grant(output.path(), "/output", DirAccess::ReadWrite),
            json!({}),
        )
        .await;
    let pipeline = s
        .pipeline(json!({"name": "nul", "owner": "o",
            "retry": {"max_attempts": 3, "initial_backoff_seconds": 1, "max_backoff_seconds": 1},
            "steps": [{"plugin": "nul-tap@1.0.0"}, {"plugin": jsonl, "config": {"directory": "/output"}}]}))
        .await;
    let run = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
    let run_id = run["aggregate_id"].as_str().unwrap();
    let failed = s.wait_event(run_id, "run.failed", Duration::from_secs(30)).await;
    assert_eq!(failed["error"]["code"], json!("checkpoint_refused"), "{failed}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("validation_failed"),
        "{failed}"
    );
    assert_eq!(failed["final"], json!(true), "{failed}");
    assert_eq!(s.run_events(run_id, "run.claimed").await.len(), 1);
    s.shutdown.cancel();
}
