//! The `process` runtime: native executables with the same wiring and limits.

use std::time::Duration;

use flexcore_contracts::model::{PluginKind, ResourceLimits};
use flexcore_runner::executor::{code, Program, Stage};
use serde_json::json;

use crate::helpers::*;

/// `/bin/sh -c <script>`; the runner appends `--config C [--state S]` as `$1…`.
fn sh(name: &str, kind: PluginKind, script: &str) -> Stage {
    let program = Program::Process {
        executable: "/bin/sh".into(),
        args: vec!["-c".into(), script.into(), name.into()],
    };
    stage(name, kind, program, json!({"greeting": "hi"}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_extractor_gets_config_and_state_files_and_feeds_a_wasm_loader() {
    let script = r#"
        test "$1" = --config && test "$3" = --state || exit 9
        grep -q '"greeting":"hi"' "$2" || exit 8
        printf '{"type":"SCHEMA","stream":"s","schema":{},"key_properties":[]}\n'
        printf '{"type":"RECORD","stream":"s","record":{"n":1}}\n{"type":"RECORD","stream":"s","record":{"n":2}}\n'
        printf '{"type":"STATE","value":%s}\n' "$(cat "$4")"
        echo "native tap done" >&2
    "#;
    let ran = run_on(
        sandbox(),
        vec![sh("tap", PluginKind::Extractor, script), discard()],
        Some(json!({"cursor": 41})),
        None,
    )
    .await;
    let summary = ran.summary();
    assert_eq!(summary.counters.get("s"), Some(&2));
    assert_eq!(
        summary
            .last_state
            .as_ref()
            .map(flexcore_contracts::OpaqueJson::to_value),
        Some(json!({"cursor": 41}))
    );
    assert!(ran.logs().contains(&"native tap done"), "{:?}", ran.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_loader_echoes_state() {
    let stages = vec![
        extractor(
            "generator",
            plugin("generator"),
            json!({"records": 3000, "state_every": 1000}),
        ),
        sh("target", PluginKind::Loader, r#"grep '"type":"STATE"'"#),
    ];
    let ran = run(stages).await;
    assert_eq!(
        ran.summary()
            .last_state
            .as_ref()
            .map(flexcore_contracts::OpaqueJson::to_value),
        Some(json!({"generated": 3000}))
    );
    assert_eq!(ran.checkpoints().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_stage_and_its_children_are_killed_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("echo $$ > '{}'; sleep 1000 & sleep 1000; wait", pid_file.display());
    let mut tap = sh("sleepy", PluginKind::Extractor, &script);
    tap.limits = ResourceLimits {
        timeout_seconds: Some(1),
        ..Default::default()
    };
    let ran = run(vec![tap, discard()]).await;
    assert_eq!(ran.failure().code, code::TIMEOUT, "{:?}", ran.failure());
    assert_within_a_second_of(ran.elapsed, Duration::from_secs(1));
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let group = rustix::process::Pid::from_raw(pid).unwrap();
    // The whole group is gone (or going): no member left to signal.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while rustix::process::test_kill_process_group(group).is_ok() {
        assert!(std::time::Instant::now() < deadline, "process group {pid} survived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_a_native_stage_within_a_second() {
    let after = Duration::from_millis(300);
    let ran = run_on(
        sandbox(),
        vec![sh("sleepy", PluginKind::Extractor, "sleep 1000"), discard()],
        None,
        Some(after),
    )
    .await;
    assert_eq!(ran.failure().code, code::CANCELLED);
    assert_within_a_second_of(ran.elapsed, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_flood_is_cut_at_its_cap_and_a_failure_is_an_exit_status() {
    let mut flood = sh("yes", PluginKind::Extractor, "yes '{\"type\":\"NOOP\"}'");
    flood.limits = ResourceLimits {
        max_output_bytes: Some(256 << 10),
        ..Default::default()
    };
    let ran = run(vec![flood, discard()]).await;
    assert_eq!(ran.failure().code, code::OUTPUT_LIMIT, "{:?}", ran.failure());

    let ran = run(vec![
        sh("failing", PluginKind::Extractor, "echo oops >&2; exit 4"),
        discard(),
    ])
    .await;
    let failure = ran.failure();
    assert_eq!(failure.message, "step 0 (failing): exited with status 4");
    assert!(ran.logs().contains(&"oops"));
}
