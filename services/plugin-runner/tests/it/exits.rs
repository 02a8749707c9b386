//! Exit statuses: the sysexits convention decides whether an attempt is retried, and the
//! plugin's last stderr line says why in the failure (the example plugins through the SDK).

use flexcore_contracts::model::{DirAccess, DirGrant, Grants};
use flexcore_runner::executor::code;
use serde_json::json;

use crate::helpers::*;

fn csv_reading(path: &str, dir: &std::path::Path) -> flexcore_runner::executor::Stage {
    let mut csv = extractor("csv", plugin("csv"), json!({"path": path}));
    csv.grants = Grants {
        dirs: vec![DirGrant {
            host_path: dir.to_string_lossy().into_owned(),
            guest_path: "/data".into(),
            access: DirAccess::ReadOnly,
        }],
        ..Default::default()
    };
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_input_file_is_permanent_and_the_error_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let ran = run(vec![csv_reading("/data/in.csv", dir.path()), discard()]).await;
    let failure = ran.failure();
    assert_eq!(failure.code, code::EXIT_STATUS, "{failure:?}");
    assert!(!failure.retryable, "{failure:?}");
    assert_eq!(failure.step, Some(0));
    assert!(
        failure
            .message
            .starts_with("step 0 (csv): exited with status 66 (no input): /data/in.csv: No such file or directory"),
        "{failure:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_outside_the_grants_is_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let ran = run(vec![csv_reading("/etc/passwd", dir.path()), discard()]).await;
    let failure = ran.failure();
    assert!(!failure.retryable, "{failure:?}");
    assert!(
        failure
            .message
            .starts_with("step 0 (csv): exited with status 66 (no input): /etc/passwd: ")
            && failure
                .message
                .ends_with("(the plugin sees only its granted directories, by their guest paths)"),
        "{failure:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = csv_reading("/data/in.csv", dir.path());
    csv.config = json!({"path": "/data/in.csv", "colour": "blue"}).into();
    let ran = run(vec![csv, discard()]).await;
    let failure = ran.failure();
    assert!(!failure.retryable, "{failure:?}");
    assert!(
        failure
            .message
            .starts_with("step 0 (csv): exited with status 78 (config error): config file ")
            && failure.message.contains("unknown field `colour`"),
        "{failure:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_statuses_stay_retryable_with_the_last_words() {
    let failing = extractor("failing", plugin("misbehave"), json!({"mode": "exit_error"}));
    let ran = run(vec![failing, discard()]).await;
    let failure = ran.failure();
    assert!(failure.retryable, "{failure:?}");
    assert_eq!(
        failure.message,
        "step 0 (failing): exited with status 2: misbehave: failing on purpose"
    );
}
