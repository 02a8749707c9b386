//! Work that finished stays finished through an outage, and everything one request caused
//! shares its correlation id.
//!
//! - The command service is down (longer than the run's lease) exactly when a run's last
//!   record is loaded: the runner keeps the lease alive by heartbeat and retries its outcome
//!   under the same `command_id` until the service is back, so the run succeeds with
//!   attempt 1 and the loader received every record once.
//! - The runner's and the scheduler's events carry the correlation id of the request (or
//!   the schedule fire) that caused them.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use async_nats::HeaderMap;
use flexcore_system_tests::{Options, Stack};
use serde_json::{json, Value};

/// A native tap: a SCHEMA, three RECORDs and a STATE, then it waits for `gate` to exist
/// (when given) before it exits.
fn tap(dir: &Path, gate: Option<&Path>) -> String {
    let script = dir.join("tap.sh");
    let wait = gate.map_or(String::new(), |gate| {
        format!("while [ ! -e {} ]; do sleep 0.05; done\n", gate.display())
    });
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             printf '%s\\n' '{{\"type\":\"SCHEMA\",\"stream\":\"rows\",\"schema\":{{}},\"key_properties\":[]}}'\n\
             for n in 1 2 3; do printf '{{\"type\":\"RECORD\",\"stream\":\"rows\",\"record\":{{\"n\":%s}}}}\\n' $n; done\n\
             printf '%s\\n' '{{\"type\":\"STATE\",\"value\":{{\"done\":3}}}}'\n\
             {wait}"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script.display().to_string()
}

/// Registers the tap and the wasm JSONL loader (writing to the stack's output directory)
/// and creates pipeline `name` of them with `extra` fields; returns its id.
async fn pipeline(s: &Stack, name: &str, executable: &str, extra: Value) -> String {
    s.ok(
        "plugin.register",
        json!({"name": "tap", "version": "1.0.0", "kind": "extractor", "runtime": "process",
               "executable": executable, "limits": {"timeout_seconds": 120}}),
    )
    .await;
    let grants = json!({"grants": {"dirs": [{"host_path": s.output.path().display().to_string(),
                                           "guest_path": "/out", "access": "read_write"}]}});
    let jsonl = s.register("flexcore-plugin-jsonl", "jsonl", "loader", grants).await;
    let mut body = json!({"name": name, "owner": "o", "steps": [
        {"plugin": "tap@1.0.0"}, {"plugin": jsonl, "config": {"directory": "/out"}}]});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    s.ok("pipeline.create", body).await["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_finished_during_a_command_service_outage_is_not_run_again() {
    let lease = Duration::from_secs(2);
    let mut s = Stack::start(Options {
        runner: true,
        scheduler: true,
        lease,
        ..Options::default()
    })
    .await;
    let tools = tempfile::tempdir().unwrap();
    let gate = tools.path().join("gate");
    let executable = tap(tools.path(), Some(&gate));
    let id = pipeline(&s, "outage", &executable, json!({})).await;
    let run = s.ok("run.request", json!({"pipeline_id": id})).await;
    let run_id = run["aggregate_id"].as_str().unwrap().to_owned();
    // Every record is loaded and checkpointed; the tap waits at the gate.
    let checkpoint = s
        .wait_run_event(&run_id, "run.checkpointed", Duration::from_secs(60))
        .await;
    assert_eq!(checkpoint["state"], json!({"done": 3}));

    s.stop_command().await;
    std::fs::write(&gate, "").unwrap();
    // The outcome cannot be committed now; the lease would have expired twice over.
    tokio::time::sleep(lease * 3).await;
    assert!(
        !s.event_types(&run_id).await.iter().any(|t| t == "run.succeeded"),
        "committed while the command service was down?"
    );
    s.start_command().await;

    let succeeded = s
        .wait_run_event(&run_id, "run.succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(succeeded["attempt"], json!(1), "{succeeded}");
    let types = s.event_types(&run_id).await;
    assert_eq!(types.iter().filter(|t| *t == "run.claimed").count(), 1, "{types:?}");
    assert!(
        !types.iter().any(|t| t == "run.timed_out" || t == "run.retried"),
        "{types:?}"
    );
    let rows = std::fs::read_to_string(s.output.path().join("rows.jsonl")).unwrap();
    assert_eq!(rows, "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n", "each record loaded once");
    s.stop().await;
}

/// The runner is told to stop just after the plugins ended, while the final STATE's
/// checkpoint waits for a command service that is down and comes back within the
/// runner's shutdown grace: the checkpoint is committed, and before the run is reported
/// succeeded (were it given up at the stop signal while the outcome still went out, the
/// pipeline's bookmark would lag and the next run load records again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_told_to_stop_commits_the_last_checkpoint_before_any_success() {
    let mut s = Stack::start(Options {
        runner: true,
        ..Options::default()
    })
    .await;
    let tools = tempfile::tempdir().unwrap();
    let (ready, gate) = (tools.path().join("ready"), tools.path().join("gate"));
    let script = tools.path().join("tap.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             printf '%s\\n' '{{\"type\":\"SCHEMA\",\"stream\":\"rows\",\"schema\":{{}},\"key_properties\":[]}}'\n\
             printf '%s\\n' '{{\"type\":\"RECORD\",\"stream\":\"rows\",\"record\":{{\"n\":1}}}}'\n\
             touch {ready}\n\
             while [ ! -e {gate} ]; do sleep 0.05; done\n\
             printf '%s\\n' '{{\"type\":\"STATE\",\"value\":{{\"done\":1}}}}'\n",
            ready = ready.display(),
            gate = gate.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = pipeline(&s, "last-state", &script.display().to_string(), json!({})).await;
    let run = s.ok("run.request", json!({"pipeline_id": id})).await;
    let run_id = run["aggregate_id"].as_str().unwrap().to_owned();
    flexcore_testkit::wait_until(Duration::from_secs(60), "the tap reached its gate", || async {
        ready.exists()
    })
    .await
    .unwrap();
    s.stop_command().await;
    std::fs::write(&gate, "").unwrap();
    // The STATE is out and the plugins end; its checkpoint finds no command service.
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.signal_runner_stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.start_command().await;
    // Past the runner's grace: whatever it was going to report is reported by now.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let types = s.event_types(&run_id).await;
    // Had the plugins not quite ended at the stop signal (a loaded machine), they are
    // stopped and the work goes back: no outcome, but the checkpoint is committed all the
    // same. Either way the run never succeeds without it.
    let succeeded = types.iter().position(|t| t == "run.succeeded");
    let last_checkpoint = types.iter().rposition(|t| t == "run.checkpointed");
    assert!(
        succeeded.is_none_or(|done| last_checkpoint.is_some_and(|c| c < done)),
        "the run succeeded without its last checkpoint: {types:?}"
    );
    let checkpoint = s
        .wait_run_event(&run_id, "run.checkpointed", Duration::from_secs(1))
        .await;
    assert_eq!(checkpoint["state"], json!({"done": 1}), "{types:?}");
    let bookmark: Value = sqlx::query_scalar(
        "SELECT data FROM events WHERE aggregate_id = $1::uuid AND event_type = 'pipeline.state_committed' \
         ORDER BY version DESC LIMIT 1",
    )
    .bind(&id)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(bookmark["state"], json!({"done": 1}), "the pipeline's bookmark");
    s.stop().await;
}

async fn correlation_ids(s: &Stack, run_id: &str) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "SELECT event_type, metadata->>'correlation_id' FROM events WHERE aggregate_id = $1::uuid ORDER BY version",
    )
    .bind(run_id)
    .fetch_all(&s.db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_and_scheduler_events_carry_the_correlation_id_of_their_cause() {
    let s = Stack::start(Options {
        runner: true,
        scheduler: true,
        ..Options::default()
    })
    .await;
    let tools = tempfile::tempdir().unwrap();
    let executable = tap(tools.path(), None);
    let id = pipeline(&s, "correlated", &executable, json!({"max_active_runs": 10})).await;

    // Requested with a correlation id: the runner's claim, checkpoint and outcome share it.
    let mut headers = HeaderMap::new();
    headers.insert("Flexcore-Correlation-Id", "order-7");
    let reply = s
        .client
        .request_with_headers(
            "flexcore.cmd.run.request",
            headers,
            serde_json::to_vec(&json!({"pipeline_id": id})).unwrap().into(),
        )
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    let run_id = reply["aggregate_id"].as_str().unwrap().to_owned();
    s.wait_run_event(&run_id, "run.succeeded", Duration::from_secs(60))
        .await;
    let events = correlation_ids(&s, &run_id).await;
    assert!(events.len() >= 4, "{events:?}");
    for (event_type, correlation) in &events {
        assert_eq!(correlation.as_deref(), Some("order-7"), "{event_type}: {events:?}");
    }

    // Fired by a schedule: one correlation id for the fire and everything it caused.
    s.ok(
        "schedule.create",
        json!({"pipeline_id": id, "cron": "* * * * * *", "overlap": "skip"}),
    )
    .await;
    let fired: String = {
        let query = || async {
            sqlx::query_scalar::<_, String>(
                "SELECT aggregate_id::text FROM events WHERE event_type = 'run.succeeded' AND aggregate_id <> $1::uuid LIMIT 1",
            )
            .bind(&run_id)
            .fetch_optional(&s.db.pool)
            .await
            .unwrap()
        };
        flexcore_testkit::wait_until(Duration::from_secs(60), "a scheduled run succeeds", || async {
            query().await.is_some()
        })
        .await
        .unwrap();
        query().await.unwrap()
    };
    let events = correlation_ids(&s, &fired).await;
    let first = events[0].1.clone();
    assert!(first.is_some(), "{events:?}");
    assert!(events.iter().all(|(_, c)| *c == first), "{events:?}");
    s.stop().await;
}
