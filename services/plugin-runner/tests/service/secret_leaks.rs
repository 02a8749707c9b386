//! Secrets never leave their box (issue 15 §3), on the real stack: the command service and
//! the runner over a private NATS and a fresh Postgres, the hostile `leaky` plugin in
//! wasmtime, and a real `flexcore-runner` process killed in the middle of a run.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::consumer;
use base64::Engine as _;
use flexcore_contracts::model::Grants;
use flexcore_contracts::work::RunLogLine;
use flexcore_runner::sandbox::{Sandbox, SandboxConfig};
use flexcore_runner::worker::{EnvAllowList, SecretSource};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::{runner_config, stack, workspace, Stack};

/// The first `Some` of `probe`, polled until `timeout`.
async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A stack whose runner reads secrets from `dir` and lets plugins be granted `allow`.
async fn secret_stack(dir: &Path, allow: &[&str]) -> Stack {
    let mut config = runner_config(Duration::from_secs(10), SecretSource::Dir(dir.to_owned()));
    let allow: Vec<String> = allow.iter().map(|a| (*a).to_owned()).collect();
    config.plugin_env_allow = EnvAllowList::new(&allow, None).unwrap();
    stack(Some(config)).await
}

/// Every log line of the run in `FLEXCORE_LOGS` (waits until none came for 2 s).
async fn run_logs(s: &Stack, run_id: &str) -> Vec<String> {
    let logs = wait_for(Duration::from_secs(10), "the log stream", || async {
        s.js.get_stream("FLEXCORE_LOGS").await.ok()
    })
    .await;
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
        lines.push(serde_json::from_slice::<RunLogLine>(&m.payload).unwrap().line);
    }
    lines
}

/// How many stored events (data or metadata) contain `needle`.
async fn events_containing(s: &Stack, needle: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE strpos(data::text, $1) > 0 OR strpos(metadata::text, $1) > 0")
        .bind(needle)
        .fetch_one(&s.db.pool)
        .await
        .unwrap()
}

async fn request(s: &Stack, pipeline: &str) -> String {
    let run = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
    run["aggregate_id"].as_str().unwrap().to_owned()
}

/// The `leaky` plugin logs its password raw, inside its config as JSON, as JSON inside
/// JSON, percent-encoded, in a Basic auth header and across the 4 KiB line cut; names its
/// stream after another secret (a secret where a name goes) and puts the password in its
/// STATE. None of it reaches a log line, an event (counters, checkpoints, the pipeline's
/// bookmark) or a failure message; the records themselves still carry the value to the
/// loader (that is what the secret is for).
#[tokio::test]
async fn a_hostile_plugin_leaks_no_secret_into_logs_events_or_counters() {
    let secrets = tempfile::tempdir().unwrap();
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let password = format!("hunter2-\"q\\uote\\slash/é-{marker}");
    let table = format!("orders_{}", uuid::Uuid::new_v4().simple());
    std::fs::write(secrets.path().join("PASSWORD"), format!("{password}\n")).unwrap();
    // The table name as a mounted Kubernetes Secret `db` holds it (key `table`, a symlink
    // into `..data/`): `${secret:db__table}` reads `<dir>/db/table`.
    std::fs::create_dir_all(secrets.path().join("db/..data")).unwrap();
    std::fs::write(secrets.path().join("db/..data/table"), &table).unwrap();
    std::os::unix::fs::symlink("..data/table", secrets.path().join("db/table")).unwrap();
    let s = secret_stack(secrets.path(), &[]).await;
    let leaky = s.register_plain("flexcore-plugin-leaky", "leaky", "extractor").await;
    let discard = s.register_plain("flexcore-plugin-discard", "discard", "loader").await;

    // A reference where a name goes is refused by the command service.
    let keyed = s
        .send(
            "pipeline.create",
            json!({"name": "keyed", "owner": "o", "steps": [
                {"plugin": leaky, "config": {"mode": "leak", "password": "x", "stream": "s", "${secret:db__table}": 1}},
                {"plugin": discard}]}),
        )
        .await;
    assert_eq!(keyed["error"]["code"], json!("validation_failed"), "{keyed}");

    let pipeline = s
        .pipeline(json!({"name": "leaky", "owner": "o", "steps": [
            {"plugin": leaky, "config": {"mode": "leak", "password": "${secret:PASSWORD}", "stream": "${secret:db__table}"}},
            {"plugin": discard}]}))
        .await;
    let run_id = request(&s, &pipeline).await;
    let done = s.wait_event(&run_id, "run.succeeded", Duration::from_secs(60)).await;
    assert_eq!(done["counters"], json!({"[redacted]": 2}), "{done}");
    let checkpoints = s.run_events(&run_id, "run.checkpointed").await;
    assert_eq!(
        checkpoints.last().unwrap()["state"],
        json!({"bookmarks": {"[redacted]": 2}, "token": "[redacted]"}),
        "{checkpoints:?}"
    );

    let basic = base64::engine::general_purpose::STANDARD.encode(format!("user:{password}"));
    // The part of the header that encodes the password alone (not "user:", not padding).
    let basic_core = &basic[8..basic.len() - 4];
    let lines = run_logs(&s, &run_id).await;
    assert!(lines.len() >= 6, "{lines:#?}");
    for line in &lines {
        for leak in [marker.as_str(), table.as_str(), "hunter2", "uote", basic_core] {
            assert!(!line.contains(leak), "a log line leaks {leak:?}: {line}");
        }
    }
    let redacted = lines.iter().filter(|l| l.contains("[redacted]")).count();
    // Six from the leaky plugin, and the loader's record-count metric naming the stream:
    // every stage's output is scrubbed of every secret of the run.
    assert_eq!(
        redacted, 7,
        "raw, config, JSON in JSON, URL, Basic, long line, the loader's metric: {lines:#?}"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("INFO METRIC") && l.contains("[redacted]")));
    let long = lines.iter().find(|l| l.starts_with("INFO xxxx")).unwrap();
    assert!(
        long.ends_with("[redacted] …[truncated]"),
        "the password across the cut is redacted whole, then the line cut: …{}",
        &long[long.len() - 40..]
    );
    for leak in [marker.as_str(), table.as_str(), basic_core] {
        assert_eq!(events_containing(&s, leak).await, 0, "an event contains {leak:?}");
    }
    assert!(
        events_containing(&s, "${secret:PASSWORD}").await > 0,
        "events keep the reference"
    );

    // A protocol error quoting the secret stream's name: the failure is redacted too.
    let undeclared = s
        .pipeline(json!({"name": "undeclared", "owner": "o", "steps": [
            {"plugin": leaky, "config": {"mode": "undeclared", "password": "-", "stream": "${secret:db__table}"}},
            {"plugin": discard}]}))
        .await;
    let run_id = request(&s, &undeclared).await;
    let failed = s.wait_event(&run_id, "run.failed", Duration::from_secs(60)).await;
    assert_eq!(failed["error"]["code"], json!("protocol"), "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.contains("[redacted]") && !message.contains(&table), "{message}");
    assert_eq!(events_containing(&s, &table).await, 0);
    s.shutdown.cancel();
}

/// An `env` grant passes a host variable only when the runner's operator allows its name;
/// the runner's own settings (`FLEXCORE_…`) can never be granted.
#[tokio::test]
async fn env_grants_pass_only_names_the_operator_allows() {
    const ALLOWED: &str = "LEAKY_TEST_ALLOWED_VAR";
    // Edition 2021: safe; a name no other test reads.
    std::env::set_var(ALLOWED, "visible-value");
    let secrets = tempfile::tempdir().unwrap();
    let s = secret_stack(secrets.path(), &[ALLOWED]).await;
    let discard = s.register_plain("flexcore-plugin-discard", "discard", "loader").await;
    let granted = |names: &[&str]| Grants {
        env: names.iter().map(|n| (*n).to_owned()).collect(),
        ..Default::default()
    };
    let mut runs = Vec::new();
    for (name, grants) in [
        ("allowed", granted(&[ALLOWED])),
        ("path", granted(&[ALLOWED, "PATH"])),
        ("database", granted(&["FLEXCORE__DATABASE__URL"])),
    ] {
        let plugin = s
            .register(
                "flexcore-plugin-leaky",
                &format!("leaky-{name}"),
                "extractor",
                grants,
                json!({}),
            )
            .await;
        let pipeline = s
            .pipeline(json!({"name": name, "owner": "o", "steps": [
                {"plugin": plugin, "config": {"mode": "leak", "password": "-", "stream": "s",
                  "env": [ALLOWED, "PATH", "HOME", "FLEXCORE__DATABASE__URL", "FLEXCORE__NATS__PASSWORD"]}},
                {"plugin": discard}]}))
            .await;
        runs.push((name, request(&s, &pipeline).await));
    }

    let (_, allowed) = &runs[0];
    s.wait_event(allowed, "run.succeeded", Duration::from_secs(60)).await;
    let lines = run_logs(&s, allowed).await;
    let env: Vec<&String> = lines.iter().filter(|l| l.starts_with("INFO env ")).collect();
    assert_eq!(
        env,
        [
            &format!("INFO env {ALLOWED}=visible-value"),
            "INFO env PATH is not set",
            "INFO env HOME is not set",
            "INFO env FLEXCORE__DATABASE__URL is not set",
            "INFO env FLEXCORE__NATS__PASSWORD is not set"
        ]
    );
    for (name, run_id) in &runs[1..] {
        let failed = s.wait_event(run_id, "run.failed", Duration::from_secs(60)).await;
        assert_eq!(failed["error"]["code"], json!("sandbox"), "{name}: {failed}");
        assert_eq!(failed["retryable"], json!(false), "{name}: {failed}");
        let message = failed["error"]["message"].as_str().unwrap();
        assert!(message.contains("runner.plugin_env_allow"), "{name}: {message}");
    }
    s.shutdown.cancel();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The one file matching `<root>/runner-*/exec-*/step-0/config.json`, if any.
fn config_file(root: &Path) -> Option<PathBuf> {
    let under = |dir: &Path, prefix: &str| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| e.path())
            .collect()
    };
    under(root, "runner-")
        .iter()
        .flat_map(|r| under(r, "exec-"))
        .map(|e| e.join("step-0/config.json"))
        .find(|c| c.exists())
}

/// A real `flexcore-runner` process writes a stage's resolved config (secret included) into
/// its private work directory, 0700 all the way down and the file 0600; killed with
/// SIGKILL mid-run it leaves the directory behind, and the next runner to start on the
/// host removes it.
#[tokio::test]
async fn a_killed_runners_config_files_are_private_and_removed_by_the_next_runner() {
    let secrets = tempfile::tempdir().unwrap();
    let password = format!("s3cr3t-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(secrets.path().join("PASSWORD"), &password).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("work");
    let pid_file = scratch.path().join("plugin.pid");
    let tap = scratch.path().join("tap.sh");
    std::fs::write(
        &tap,
        format!("#!/bin/sh\necho $$ > '{}'\nexec sleep 300\n", pid_file.display()),
    )
    .unwrap();
    std::fs::set_permissions(&tap, std::fs::Permissions::from_mode(0o755)).unwrap();

    let s = stack(None).await;
    let discard = s.register_plain("flexcore-plugin-discard", "discard", "loader").await;
    s.ok(
        "plugin.register",
        json!({"name": "sleepy-tap", "version": "1.0.0", "kind": "extractor", "runtime": "process",
               "executable": tap.display().to_string()}),
    )
    .await;
    let pipeline = s
        .pipeline(json!({"name": "sleepy", "owner": "o", "steps": [
            {"plugin": "sleepy-tap@1.0.0", "config": {"password": "${secret:PASSWORD}"}}, {"plugin": discard}]}))
        .await;
    let mut runner = std::process::Command::new(env!("CARGO_BIN_EXE_flexcore-runner"))
        .current_dir(workspace())
        .env("FLEXCORE_CONFIG_DIR", workspace().join("config"))
        .envs(s.nats.env_for("runner"))
        .env("FLEXCORE__RUNNER__WORK_DIR", &work)
        // The tap writes its pid into the test's private directory: it runs as the test's
        // user, not as nobody.
        .env(
            "FLEXCORE__RUNNER__PROCESS_UID",
            rustix::process::getuid().as_raw().to_string(),
        )
        .env(
            "FLEXCORE__RUNNER__PROCESS_GID",
            rustix::process::getgid().as_raw().to_string(),
        )
        .env("FLEXCORE__RUNNER__SECRETS_SOURCE", "dir")
        .env("FLEXCORE__RUNNER__SECRETS_DIR", secrets.path())
        .env("FLEXCORE__TELEMETRY__LOG_FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let run_id = request(&s, &pipeline).await;
    s.wait_event(&run_id, "run.claimed", Duration::from_secs(60)).await;
    let config = wait_for(Duration::from_secs(30), "the stage's config file", || async {
        config_file(&work).filter(|_| pid_file.exists())
    })
    .await;
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains(&password), "the file holds the resolved config");
    assert_eq!(mode(&config), 0o600, "{}", config.display());
    let step = config.parent().unwrap();
    let exec = step.parent().unwrap();
    let runner_dir = exec.parent().unwrap().to_owned();
    for dir in [step, exec, &runner_dir, &work] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }

    runner.kill().unwrap();
    runner.wait().unwrap();
    // The plugin outlived its runner (SIGKILL gives no chance to clean up); end it.
    let plugin_pid = std::fs::read_to_string(&pid_file).unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-9", plugin_pid.trim()])
        .status();
    assert!(config.exists(), "a killed runner leaves its directory behind");

    // The next runner on the host (its sandbox) removes it when it starts.
    let next = Sandbox::new(SandboxConfig {
        work_dir: Some(work.clone()),
        pooling: false,
        ..Default::default()
    })
    .unwrap();
    assert!(!runner_dir.exists(), "the dead runner's directory is removed");
    assert!(next.work_dir().path().starts_with(&work));
    let left: Vec<Value> = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .map(|e| json!(e.file_name().to_string_lossy()))
        .collect();
    assert_eq!(left.len(), 1, "only the new runner's directory: {left:?}");
    s.shutdown.cancel();
}
