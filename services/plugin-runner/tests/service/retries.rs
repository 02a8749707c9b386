//! Which failures are retried, through the real runner, command service and scheduler: a
//! plugin exiting with a permanent sysexits status (a missing input file, 66) fails the
//! run after one attempt, saying why; any other status is retried by the policy.

use std::time::Duration;

use flexcore_contracts::model::DirAccess;
use flexcore_runner::worker::SecretSource;
use serde_json::{json, Value};

use crate::{dir_grant, runner_config, stack, Stack};

/// Runner and command service (from [`stack`]) plus a scheduler, which retries.
async fn stack_with_scheduler() -> Stack {
    let secrets = SecretSource::Env {
        prefix: "FLEXCORE_TEST_SECRET_".into(),
    };
    let s = stack(Some(runner_config(Duration::from_secs(10), secrets))).await;
    s.spawn_scheduler().await;
    s
}

/// The run's final `run.failed`, once it is recorded.
async fn final_failure(s: &Stack, run_id: &str) -> Value {
    flexcore_testkit::wait_until(Duration::from_secs(60), "a final run.failed", || async {
        s.run_events(run_id, "run.failed")
            .await
            .iter()
            .any(|f| f["final"] == json!(true))
    })
    .await
    .unwrap();
    s.run_events(run_id, "run.failed").await.pop().unwrap()
}

#[tokio::test]
async fn a_missing_input_file_fails_the_run_after_one_attempt_saying_why() {
    let s = stack_with_scheduler().await;
    let input = tempfile::tempdir().unwrap();
    let csv = s
        .register(
            "flexcore-plugin-csv",
            "csv",
            "extractor",
            dir_grant(input.path(), "/data", DirAccess::ReadOnly),
            json!({}),
        )
        .await;
    let discard = s.register_plain("flexcore-plugin-discard", "discard", "loader").await;
    let pipeline = s
        .pipeline(json!({"name": "missing", "owner": "o",
            "retry": {"max_attempts": 3, "initial_backoff_seconds": 1, "max_backoff_seconds": 1},
            "steps": [{"plugin": csv, "config": {"path": "/data/in.csv"}}, {"plugin": discard}]}))
        .await;
    let run = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
    let run_id = run["aggregate_id"].as_str().unwrap();

    let failed = final_failure(&s, run_id).await;
    assert_eq!(failed["attempt"], json!(1), "{failed}");
    assert_eq!(failed["retryable"], json!(false), "{failed}");
    assert_eq!(failed["error"]["code"], json!("exit_status"), "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("step 0 (csv@1.0.0): exited with status 66 (no input): /data/in.csv: No such file"),
        "{failed}"
    );
    // Past the policy's back-off: no second attempt was started.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.run_events(run_id, "run.claimed").await.len(), 1);
    assert!(s.run_events(run_id, "run.retried").await.is_empty());
    s.shutdown.cancel();
}

#[tokio::test]
async fn a_retryable_exit_status_is_retried_by_the_policy() {
    let s = stack_with_scheduler().await;
    let failing = s
        .register_plain("flexcore-plugin-misbehave", "failing", "extractor")
        .await;
    let discard = s.register_plain("flexcore-plugin-discard", "discard", "loader").await;
    let pipeline = s
        .pipeline(json!({"name": "flaky", "owner": "o",
            "retry": {"max_attempts": 2, "initial_backoff_seconds": 1, "max_backoff_seconds": 1},
            "steps": [{"plugin": failing, "config": {"mode": "exit_error"}}, {"plugin": discard}]}))
        .await;
    let run = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
    let run_id = run["aggregate_id"].as_str().unwrap();

    let last = final_failure(&s, run_id).await;
    assert_eq!(last["attempt"], json!(2), "{last}");
    let failures = s.run_events(run_id, "run.failed").await;
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(failures[0]["retryable"], json!(true), "{failures:?}");
    assert_eq!(failures[0]["final"], json!(false), "{failures:?}");
    assert_eq!(
        failures[0]["error"]["message"],
        json!("step 0 (failing@1.0.0): exited with status 2: misbehave: failing on purpose"),
        "{failures:?}"
    );
    assert_eq!(s.run_events(run_id, "run.claimed").await.len(), 2);
    s.shutdown.cancel();
}
