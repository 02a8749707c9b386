//! The streams come from the setup identity alone (issue 15): on a server where setup has
//! not run, a service waits and serves nothing; `flexcore-command setup` refuses to run as
//! any other identity (whose NATS user may not create streams anyway); as `setup` it
//! creates every stream and the plugin bucket with the configured settings, applies
//! changed settings on the next run, and the waiting service then starts serving. The
//! bucket's bound is enforced by the server: an upload over it is refused.

use std::process::{Command, Stdio};
use std::time::Duration;

use flexcore_contracts::subjects;
use flexcore_system_tests::procs::{binary, ServiceProcess};
use flexcore_testkit::TestNats;

/// `flexcore-command setup` on `nats` as identity `who` with `env`; its exit status and
/// output.
fn setup_as(nats: &TestNats, who: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(binary("flexcore-command"));
    command
        .arg("setup")
        .env(
            "FLEXCORE_CONFIG_DIR",
            flexcore_system_tests::plugins::workspace().join("config"),
        )
        .env("FLEXCORE__TELEMETRY__LOG_FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    for (key, value) in nats.env_for(who) {
        command.env(key, value);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn only_the_setup_identity_creates_the_streams_and_services_wait_for_it() {
    flexcore_testkit::init_tracing();
    let nats = TestNats::start_bare().await.unwrap();
    let js = nats.jetstream().await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    let env = [
        ("FLEXCORE__NATS__URL", nats.url.clone()),
        ("FLEXCORE__RUNNER__RUNNER_ID", "setup-test".to_owned()),
    ];
    let mut runner = ServiceProcess::start_on(&nats, "flexcore-runner", &env, logs.path());
    runner.wait_logged("waiting for setup", Duration::from_secs(30)).await;
    assert!(!runner.log_text().contains("taking run work"), "{}", runner.log_text());

    // Any other identity: refused by the binary (wrong role) before NATS is asked.
    for who in ["command", "flexctl"] {
        let (ok, output) = setup_as(&nats, who, &[]);
        assert!(!ok, "setup ran as {who}:\n{output}");
        assert!(output.contains("setup"), "{output}");
    }
    for stream in [subjects::EVENTS_STREAM, subjects::WORK_STREAM, subjects::LOGS_STREAM] {
        assert!(js.get_stream(stream).await.is_err(), "{stream} exists before setup");
    }

    let (ok, output) = setup_as(
        &nats,
        "setup",
        &[
            ("FLEXCORE__RUNNER__LOG_RETENTION_DAYS", "3"),
            ("FLEXCORE__STREAMS__PLUGINS_MAX_BYTES", "1048576"),
            ("FLEXCORE__STREAMS__DUPLICATE_WINDOW_SECONDS", "60"),
        ],
    );
    assert!(ok, "setup failed:\n{output}");
    let day = 86_400;
    for (stream, max_age) in [
        (subjects::EVENTS_STREAM, 0),
        (subjects::WORK_STREAM, 0),
        (subjects::LOGS_STREAM, 3 * day),
    ] {
        let info = js.get_stream(stream).await.unwrap().info().await.unwrap().clone();
        assert_eq!(info.config.max_age, Duration::from_secs(max_age), "{stream}");
        if stream != subjects::LOGS_STREAM {
            assert_eq!(info.config.duplicate_window, Duration::from_secs(60), "{stream}");
        }
    }
    let bucket = format!("OBJ_{}", flexcore_plugin_store::BUCKET);
    let bucket_info = js.get_stream(&bucket).await.unwrap().info().await.unwrap().clone();
    assert_eq!(bucket_info.config.max_bytes, 1_048_576);

    // The waiting runner finds its streams.
    runner.wait_logged("taking run work", Duration::from_secs(30)).await;

    // The bound holds at the server: the operator's upload of a module over it is refused.
    let operator = async_nats::jetstream::new(nats.client_as("flexctl").await.unwrap());
    let big = vec![7u8; 1_200_000];
    let refused = flexcore_plugin_store::upload(&operator, &big).await;
    assert!(refused.is_err(), "a module over the bucket's bound was stored");
    let small = flexcore_plugin_store::upload(&operator, b"\0asm\x01\0\0\0")
        .await
        .unwrap();
    assert!(flexcore_plugin_store::download(&operator, &small).await.is_ok());

    // Setup again: changed settings are applied, nothing else changes.
    let (ok, output) = setup_as(
        &nats,
        "setup",
        &[
            ("FLEXCORE__RUNNER__LOG_RETENTION_DAYS", "5"),
            ("FLEXCORE__STREAMS__PLUGINS_MAX_BYTES", "4194304"),
        ],
    );
    assert!(ok, "setup failed the second time:\n{output}");
    let logs_info = js
        .get_stream(subjects::LOGS_STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(logs_info.config.max_age, Duration::from_secs(5 * day));
    let bucket_info = js.get_stream(&bucket).await.unwrap().info().await.unwrap().clone();
    assert_eq!(bucket_info.config.max_bytes, 4_194_304);
    assert!(
        flexcore_plugin_store::download(&operator, &small).await.is_ok(),
        "the stored module is kept"
    );
    flexcore_plugin_store::upload(&operator, &big).await.unwrap();
}
