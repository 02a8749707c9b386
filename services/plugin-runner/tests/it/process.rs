//! The `process` runtime: native executables with the same wiring and limits.

use std::time::Duration;

use flexcore_contracts::model::{PluginKind, ResourceLimits};
use flexcore_runner::executor::{code, Program, Secrets, Stage};
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

/// The config file (resolved secrets in it) is readable by the runner's user only, in a
/// directory only it may enter; what the stage prints of it is scrubbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_stage_gets_a_private_config_file_and_its_secrets_are_scrubbed() {
    let token = format!("tok-{}-\"/", std::process::id());
    let script = r#"
        stat -c 'file %a' "$2" >&2
        stat -c 'dir %a' "$(dirname "$2")" >&2
        echo "config $(cat "$2")" >&2
    "#;
    let mut tap = sh("tap", PluginKind::Extractor, script);
    tap.config = json!({"token": token}).into();
    tap.secrets = Secrets::new([token.clone()]);
    let ran = run(vec![tap, discard()]).await;
    ran.summary();
    let logs = ran.logs();
    assert!(logs.contains(&"file 600") && logs.contains(&"dir 700"), "{logs:?}");
    assert!(logs.contains(&r#"config {"token":"[redacted]"}"#), "{logs:?}");
    assert!(logs.iter().all(|l| !l.contains("tok-")), "{logs:?}");
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
    // Three STATEs in quick succession (grep's output is block-buffered: likely in one
    // chunk) are coalesced, at most one checkpoint per second: the latest wins.
    let states: Vec<_> = ran.checkpoints().into_iter().map(|(s, _)| s).collect();
    assert!((1..=3).contains(&states.len()), "{states:?}");
    assert_eq!(states.last(), Some(&json!({"generated": 3000})));
}

/// Pids of the host's processes whose command line contains `token`.
pub fn processes_with(token: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(token) {
                found.push(pid);
            }
        }
    }
    found
}

/// Waits (up to two seconds) until no process carries `token`.
pub async fn assert_all_gone(token: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let left = processes_with(token);
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{token}: processes {left:?} survived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_stage_and_its_children_are_killed_at_the_timeout() {
    let token = format!("flexcore-test-{}", uuid_like());
    let script = forever(&token);
    let script = format!("{script} & {script}; wait");
    let mut tap = sh("sleepy", PluginKind::Extractor, &script);
    tap.limits = ResourceLimits {
        timeout_seconds: Some(1),
        ..Default::default()
    };
    let ran = run(vec![tap, discard()]).await;
    assert_eq!(ran.failure().code, code::TIMEOUT, "{:?}", ran.failure());
    assert_within_a_second_of(ran.elapsed, Duration::from_secs(1));
    assert_all_gone(&token).await;
}

/// A shell command that runs until killed, visible on the host as a process whose
/// command line holds `token` (its `$0`).
pub fn forever(token: &str) -> String {
    format!("sh -c 'while :; do sleep 1; done' {token}")
}

/// A token unique to this test process and call.
pub fn uuid_like() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
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
    assert_eq!(failure.message, "step 0 (failing): exited with status 4: oops");
    assert!(ran.logs().contains(&"oops"));
}
