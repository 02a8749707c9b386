//! What a guest can reach (only its grants), digests, and isolation between executions.

use std::sync::Arc;

use flexcore_contracts::model::{DirAccess, DirGrant, Grants};
use flexcore_runner::executor::{code, Program};
use flexcore_runner::sandbox::{digest_of, SandboxError};
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_the_grants_fail_inside_the_module() {
    for path in [
        "/etc/passwd",
        "/flexcore/../../../etc/passwd",
        "../etc/passwd",
        "/proc/self/environ",
    ] {
        let escape = extractor("escape", plugin("misbehave"), json!({"mode": "escape", "path": path}));
        let ran = run(vec![escape, discard()]).await;
        // The module saw an error (it exits 3 and says why); nothing reached stdout.
        let failure = ran.failure();
        assert_eq!(failure.code, code::EXIT_STATUS, "{path}: {failure:?}");
        // Exit 3 is outside the permanent statuses: retryable, with the module's last words.
        let said = format!("step 0 (escape): exited with status 3: cannot open {path}: ");
        assert!(failure.message.starts_with(&said), "{path}: {failure:?}");
        assert!(failure.retryable, "{path}: {failure:?}");
        assert!(
            ran.logs().iter().any(|l| l.starts_with("ERROR cannot open")),
            "{path}: {:?}",
            ran.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_own_config_and_granted_directories_are_readable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), "s").unwrap();
    for path in ["/flexcore/config.json", "/data/secret.txt"] {
        let mut reader = extractor("reader", plugin("misbehave"), json!({"mode": "escape", "path": path}));
        reader.grants = Grants {
            dirs: vec![DirGrant {
                host_path: dir.path().to_string_lossy().into_owned(),
                guest_path: "/data".into(),
                access: DirAccess::ReadOnly,
            }],
            ..Default::default()
        };
        let ran = run(vec![reader, discard()]).await;
        // It printed ESCAPED (the read worked), which the host then rejects as not JSON.
        let failure = ran.failure();
        assert_eq!(failure.code, code::PROTOCOL, "{path}: {failure:?}");
        assert!(
            failure.message.starts_with("step 0 (reader): line 1 is not JSON"),
            "{failure:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_granted_environment_variables_are_passed() {
    assert!(std::env::var_os("PATH").is_some());
    let ran = run(vec![
        extractor("env", wat(crate::hostile_modules::COUNT_ENV), json!({})),
        discard(),
    ])
    .await;
    ran.summary();
    let mut granted = extractor("env", wat(crate::hostile_modules::COUNT_ENV), json!({}));
    granted.grants.env = vec!["PATH".into(), "SURELY_UNSET_IN_TESTS".into()];
    let ran = run(vec![granted, discard()]).await;
    assert_eq!(ran.failure().message, "step 0 (env): exited with status 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runners_own_settings_are_never_granted() {
    for name in [
        "FLEXCORE__DATABASE__URL",
        "FLEXCORE__NATS__PASSWORD",
        "flexcore_secret_DB",
    ] {
        let mut granted = extractor("env", wat(crate::hostile_modules::COUNT_ENV), json!({}));
        granted.grants.env = vec![name.into()];
        let ran = run(vec![granted, discard()]).await;
        let failure = ran.failure();
        assert_eq!((failure.code.as_str(), failure.retryable), (code::SANDBOX, false));
        assert!(
            failure.message.starts_with(&format!(
                "step 0 (env): is granted the environment variable {name}, which belongs to the runner's own configuration"
            )),
            "{failure:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_module_is_refused_before_compiling() {
    // A pinned module no other test compiles (a cached digest never looks at the bytes),
    // delivered with one byte flipped.
    let Program::Wasm { bytes, .. } = plugin("generator") else {
        unreachable!()
    };
    let mut pinned = bytes.to_vec();
    pinned.extend_from_slice(b"\0\x08tampered");
    let digest = digest_of(&pinned);
    let mut tampered = pinned;
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    let tampered: Arc<[u8]> = tampered.into();
    let err = sandbox()
        .modules()
        .get_or_compile(&digest, Arc::clone(&tampered))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SandboxError::DigestMismatch {
            expected: digest.clone(),
            actual: digest_of(&tampered)
        }
    );
    assert!(sandbox().modules().get(&digest).is_none());

    let stage = extractor(
        "tampered",
        Program::Wasm {
            digest,
            bytes: tampered,
        },
        json!({"records": 1}),
    );
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    let cancel = tokio_util::sync::CancellationToken::new();
    let failure = flexcore_runner::executor::execute(sandbox(), vec![stage, discard()], None, tx, cancel)
        .await
        .unwrap_err();
    assert_eq!(failure.code, code::DIGEST, "{failure:?}");
    assert_eq!(failure.step, Some(0));
    assert!(!failure.retryable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_compile_a_module_once_and_instantiate_fast() {
    let Program::Wasm { digest, bytes } = plugin("discard") else {
        unreachable!()
    };
    let modules = sandbox().modules();
    let (a, b) = tokio::join!(
        modules.get_or_compile(&digest, Arc::clone(&bytes)),
        modules.get_or_compile(&digest, Arc::clone(&bytes))
    );
    assert_eq!(a.unwrap().digest(), b.unwrap().digest());
    assert!(modules.get(&digest).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_stage_does_not_disturb_a_concurrent_execution() {
    let records = 200_000;
    let happy = vec![
        extractor("generator", plugin("generator"), json!({"records": records})),
        transformer("mapper", plugin("mapper"), json!({"streams": {}})),
        discard(),
    ];
    let trapping = vec![
        extractor("trap", plugin("misbehave"), json!({"mode": "trap"})),
        discard(),
    ];
    warm(sandbox(), &happy).await;
    warm(sandbox(), &trapping).await;
    let (happy, trapped) = tokio::join!(run(happy), async {
        let mut results = Vec::new();
        for _ in 0..5 {
            results.push(run(trapping.clone()).await);
        }
        results
    });
    for ran in &trapped {
        let failure = ran.failure();
        assert_eq!(failure.code, code::TRAP, "{failure:?}");
        assert_eq!(failure.step, Some(0));
        assert!(failure.message.contains("unreachable"), "{failure:?}");
    }
    let summary = happy.summary();
    assert_eq!(summary.counters.get("gen"), Some(&records));
    assert_eq!(
        summary
            .last_state
            .as_ref()
            .map(flexcore_contracts::OpaqueJson::to_value),
        Some(json!({"generated": records}))
    );
}
