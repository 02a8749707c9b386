//! `examples/python/run_pipeline.py`, a client written with nothing but nats-py and the
//! JSON Schemas, against the real command service and runner.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use flexcore_contracts::model::{DirAccess, Grants};
use flexcore_runner::worker::SecretSource;
use serde_json::json;

use crate::{dir_grant, runner_config, stack, wasm, workspace, Stack};

/// The version `flexctl dev` registers the example plugins at (the workspace version),
/// which is also the script's default: the plugins are registered at it and the script
/// is run without `--plugin-version`, so the two cannot drift apart unnoticed.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The Python of `.flexcore/python`, the venv scripts/test.sh creates with nats-py.
fn python() -> PathBuf {
    let python = std::env::var_os("FLEXCORE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".flexcore/python/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh (it creates the venv .flexcore/python and installs \
         nats-py from examples/python/requirements.txt), or set FLEXCORE_TEST_PYTHON to a Python \
         with nats-py",
        python.display()
    );
    python
}

/// Uploads an example plugin's module and registers it as `name@VERSION`.
async fn register(s: &Stack, package: &str, name: &str, kind: &str, grants: Grants) {
    let digest = flexcore_plugin_store::upload(&s.js, &wasm(package)).await.unwrap();
    s.ok(
        "plugin.register",
        json!({"name": name, "version": VERSION, "kind": kind, "module_digest": digest, "grants": grants}),
    )
    .await;
}

/// Runs the example with `NATS_URL` pointing at the stack's private server.
async fn run_example(s: &Stack, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg(workspace().join("examples/python/run_pipeline.py"))
        .args(args)
        .env("NATS_URL", &s.nats.url)
        .env("FLEXCORE_NKEY_SEED_FILE", s.nats.seed_file("app"))
        .env("PYTHONUNBUFFERED", "1")
        .kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        // The script reads its defaults from FLEXCORE_*; the test wants the real defaults.
        if key.to_string_lossy().starts_with("FLEXCORE_") {
            cmd.env_remove(key);
        }
    }
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("run_pipeline.py did not exit within 120 s")
        .expect("starting run_pipeline.py")
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// With its defaults, the script creates generator → jsonl, runs it, follows the run's
/// events from JetStream and exits 0 on `run.succeeded`, printing the record counters.
#[tokio::test]
async fn the_python_example_runs_a_pipeline_and_follows_its_events() {
    let s = stack(Some(runner_config(
        Duration::from_secs(10),
        SecretSource::Env {
            prefix: "FLEXCORE_TEST_SECRET_".into(),
        },
    )))
    .await;
    let output = tempfile::tempdir().unwrap();
    register(
        &s,
        "flexcore-plugin-generator",
        "generator",
        "extractor",
        Grants::default(),
    )
    .await;
    register(
        &s,
        "flexcore-plugin-jsonl",
        "jsonl",
        "loader",
        dir_grant(output.path(), "/output", DirAccess::ReadWrite),
    )
    .await;

    let out = run_example(&s, &["--records", "25", "--timeout", "90"]).await;
    let report = describe(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "run.requested",
        "run.claimed",
        "run.succeeded",
        "25 records (python_example: 25)",
    ] {
        assert!(stdout.contains(expected), "stdout lacks {expected:?}:\n{report}");
    }
    let requested = stdout.find("run.requested").unwrap();
    assert!(
        requested < stdout.find("run.succeeded").unwrap(),
        "events in order:\n{report}"
    );
    let written = std::fs::read_to_string(output.path().join("python-example/python_example.jsonl")).unwrap();
    assert_eq!(written.lines().count(), 25, "{written}");

    // The run it printed is the one recorded, requested under its actor header.
    let run_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("run ")?.strip_suffix(" requested"))
        .unwrap_or_else(|| panic!("no `run <id> requested` line:\n{report}"));
    let done = s.run_events(run_id, "run.succeeded").await;
    assert_eq!(done.len(), 1, "{report}");
    assert_eq!(done[0]["counters"], json!({"python_example": 25}));
    let actor: Option<String> =
        sqlx::query_scalar("SELECT metadata->>'actor' FROM events WHERE aggregate_id = $1::uuid AND version = 1")
            .bind(run_id)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    // The example signs its commands with the application's NKey: the actor is its name.
    assert_eq!(actor.as_deref(), Some("app"));
    s.shutdown.cancel();
}

/// A pipeline naming a plugin that is not registered is refused by the command service:
/// the script prints the command's error message and exits 2.
#[tokio::test]
async fn the_python_example_exits_2_with_the_error_of_a_rejected_command() {
    let s = stack(None).await;
    register(
        &s,
        "flexcore-plugin-generator",
        "generator",
        "extractor",
        Grants::default(),
    )
    .await;

    let out = run_example(&s, &["--loader", "not-registered", "--timeout", "30"]).await;
    let report = describe(&out);
    assert_eq!(out.status.code(), Some(2), "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = format!("step 1: plugin not-registered@{VERSION} is not registered");
    assert!(stderr.contains(&message), "stderr lacks {message:?}:\n{report}");
    assert!(stderr.contains("not_found"), "stderr names the error code:\n{report}");
    let pipelines: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'pipeline'")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(pipelines, 0, "nothing was written");
    s.shutdown.cancel();
}
