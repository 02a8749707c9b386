//! `examples/python/http_pipeline.py`, a client with nothing but `requests` and the HTTP
//! API, against the gateway on the real stack: it creates a pipeline, executes it, follows
//! the run's Server-Sent Events until it ends and exits 0 on success.

use std::path::PathBuf;
use std::time::Duration;

use flexcore_security::ApiRole;
use flexcore_system_tests::Options;
use serde_json::json;

use crate::Gw;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python of `.flexcore/python` (scripts/test.sh installs examples/python's
/// requirements there); `FLEXCORE_TEST_PYTHON` overrides it.
fn python() -> PathBuf {
    let python = std::env::var_os("FLEXCORE_TEST_PYTHON")
        .map_or_else(|| workspace().join(".flexcore/python/bin/python"), PathBuf::from);
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh (it creates .flexcore/python with examples/python/requirements.txt)",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_http_example_runs_a_pipeline_and_follows_it_to_the_end() {
    let gw = Gw::start(Options {
        runner: true,
        ..Options::default()
    })
    .await;
    let extractor = gw
        .stack
        .register("flexcore-plugin-generator", "py-gen", "extractor", json!({}))
        .await;
    let loader = gw
        .stack
        .register("flexcore-plugin-discard", "py-discard", "loader", json!({}))
        .await;
    let mut command = tokio::process::Command::new(python());
    command
        .arg(workspace().join("examples/python/http_pipeline.py"))
        .args(["--url", &gw.base, "--extractor", &extractor, "--loader", &loader])
        .args(["--api-key", gw.key(ApiRole::Admin)])
        .env("PYTHONUNBUFFERED", "1")
        .kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        // The script takes its defaults from FLEXCORE_*: the test wants the real ones.
        if key.to_string_lossy().starts_with("FLEXCORE_") {
            command.env_remove(key);
        }
    }
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("http_pipeline.py did not exit within 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "status {:?}\n{stdout}\n{stderr}",
        output.status.code()
    );
    assert!(stdout.contains("run.succeeded"), "{stdout}");
    assert!(
        stdout.contains("application/problem+json") || stdout.contains("validation_failed"),
        "the problem document is shown: {stdout}"
    );

    // Run again: the pipeline of that name is reused, not created twice.
    let again = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the second run did not exit within 120 s")
        .unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let (status, page) = gw.get(ApiRole::Viewer, "/pipelines?name=http-example").await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
}
