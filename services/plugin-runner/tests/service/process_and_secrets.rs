use std::time::Duration;

use async_nats::jetstream::consumer;
use flexcore_contracts::work::RunLogLine;
use flexcore_runner::worker::SecretSource;
use futures::StreamExt;
use serde_json::json;

use crate::{runner_config, stack, workspace};

/// `target-jsonl`, a real Singer target installed from PyPI (scripts/test.sh installs it
/// into `.flexcore/singer`), runs as an unsandboxed `process` plugin behind a wasm
/// extractor, with the same wiring: records reach its files and its STATE echoes become
/// checkpoints.
#[tokio::test]
async fn a_real_singer_target_from_pypi_runs_as_a_process_plugin() {
    let target = std::env::var("FLEXCORE_TEST_TARGET_JSONL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| workspace().join(".flexcore/singer/bin/target-jsonl"));
    assert!(
        target.exists(),
        "{} is missing: run scripts/test.sh (it installs target-jsonl from PyPI into .flexcore/singer)",
        target.display()
    );
    let s = stack(Some(runner_config(
        Duration::from_secs(10),
        SecretSource::Env {
            prefix: "FLEXCORE_TEST_SECRET_".into(),
        },
    )))
    .await;
    let generator = s.register_plain("flexcore-plugin-generator", "gen", "extractor").await;
    s.ok(
        "plugin.register",
        json!({"name": "target-jsonl", "version": "0.1.4", "kind": "loader", "runtime": "process",
               "executable": target.display().to_string(), "limits": {"timeout_seconds": 60}}),
    )
    .await;
    let out = tempfile::tempdir().unwrap();
    let pipeline = s
        .pipeline(json!({"name": "pypi", "owner": "o", "steps": [
            {"plugin": generator, "config": {"records": 250, "state_every": 100}},
            {"plugin": "target-jsonl@0.1.4", "config": {"destination_path": out.path().display().to_string()}}]}))
        .await;
    let run = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
    let run_id = run["aggregate_id"].as_str().unwrap();
    let done = s.wait_event(run_id, "run.succeeded", Duration::from_secs(60)).await;
    assert_eq!(done["counters"], json!({"gen": 250}), "{done}");
    let files: Vec<_> = std::fs::read_dir(out.path()).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "target-jsonl writes one file per stream");
    let written = std::fs::read_to_string(files[0].path()).unwrap();
    assert_eq!(written.lines().count(), 250);
    let checkpoints = s.run_events(run_id, "run.checkpointed").await;
    assert_eq!(
        checkpoints.last().unwrap()["state"],
        json!({"generated": 250}),
        "{checkpoints:?}"
    );
    s.shutdown.cancel();
}

/// A `${secret:NAME}` reference is resolved by the runner at run time; the value never
/// appears in any event or run log line.
#[tokio::test]
async fn secrets_are_resolved_at_run_time_and_never_recorded() {
    let secrets = tempfile::tempdir().unwrap();
    let secret_value = format!("/nonexistent/s3cr3t-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(secrets.path().join("API_PATH"), format!("{secret_value}\n")).unwrap();
    let s = stack(Some(runner_config(
        Duration::from_secs(10),
        SecretSource::Dir(secrets.path().to_owned()),
    )))
    .await;
    // `escape` mode opens `path` and reports the failure, path included, on stderr.
    let leaky = s
        .register_plain("flexcore-plugin-misbehave", "leaky", "extractor")
        .await;
    let discard = s.register_plain("flexcore-plugin-discard", "discard", "loader").await;
    let pipeline = s
        .pipeline(json!({"name": "leaky", "owner": "o", "steps": [
            {"plugin": leaky, "config": {"mode": "escape", "path": "${secret:API_PATH}"}}, {"plugin": discard}]}))
        .await;
    let logs = s.js.get_stream("FLEXCORE_LOGS").await;
    let run = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
    let run_id = run["aggregate_id"].as_str().unwrap();
    let failed = s.wait_event(run_id, "run.failed", Duration::from_secs(60)).await;
    assert_eq!(failed["error"]["code"], json!("exit_status"), "{failed}");
    // The error quotes the plugin's last stderr line, with the secret redacted.
    assert_eq!(
        failed["error"]["message"],
        json!("step 0 (leaky@1.0.0): exited with status 3: cannot open [redacted]: No such file or directory (os error 44)"),
        "{failed}"
    );

    // The plugin did see the resolved value: its log line says so, redacted.
    let logs = match logs {
        Ok(l) => l,
        Err(_) => s.js.get_stream("FLEXCORE_LOGS").await.unwrap(),
    };
    let consumer = logs
        .create_consumer(consumer::pull::Config {
            filter_subject: format!("flexcore.log.run.{run_id}"),
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut lines = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(2), messages.next()).await {
        let line: RunLogLine = serde_json::from_slice(&m.payload).unwrap();
        lines.push(line.line);
    }
    assert!(
        lines.iter().any(|l| l.contains("[redacted]")),
        "the plugin logged the (redacted) path: {lines:?}"
    );
    assert!(
        lines.iter().all(|l| !l.contains("s3cr3t")),
        "a log line leaked the secret: {lines:?}"
    );
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE data::text LIKE '%s3cr3t%' OR metadata::text LIKE '%s3cr3t%'",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0, "an event contains the secret value");
    let referenced: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE data::text LIKE '%${secret:API_PATH}%'")
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert!(referenced > 0, "events keep the reference, not the value");
    s.shutdown.cancel();
}
