//! The host's checks on the Singer stream.

use flexcore_runner::executor::code;
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_line_fails_with_protocol() {
    let ran = run(vec![
        extractor("bad", plugin("misbehave"), json!({"mode": "bad_json"})),
        discard(),
    ])
    .await;
    let failure = ran.failure();
    assert_eq!(failure.code, code::PROTOCOL, "{failure:?}");
    assert_eq!(failure.step, Some(0));
    assert!(
        failure.message.starts_with("step 0 (bad): line 1 is not JSON: "),
        "{failure:?}"
    );
    assert!(!failure.retryable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_line_is_blamed_on_the_stage_before_the_loader() {
    let stages = vec![
        extractor("generator", plugin("generator"), json!({"records": 10})),
        transformer("bad", plugin("misbehave"), json!({"mode": "bad_json"})),
        discard(),
    ];
    let failure = run(stages).await.failure().clone();
    assert_eq!(failure.code, code::PROTOCOL, "{failure:?}");
    assert_eq!(failure.step, Some(1));
    assert!(
        failure.message.starts_with("step 1 (bad): line 1 is not JSON"),
        "{failure:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_for_an_undeclared_stream_fails_with_protocol() {
    let stages = vec![
        extractor("sloppy", plugin("misbehave"), json!({"mode": "undeclared_stream"})),
        discard(),
    ];
    let ran = run(stages).await;
    let failure = ran.failure();
    assert_eq!(failure.code, code::PROTOCOL, "{failure:?}");
    assert_eq!(
        failure.message,
        r#"step 0 (sloppy): line 1: RECORD for undeclared stream "undeclared""#
    );
    assert!(ran.checkpoints().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loader_state_ahead_of_the_records_fails_with_protocol() {
    let stages = vec![
        extractor("generator", plugin("generator"), json!({"records": 50_000})),
        loader("eager", plugin("misbehave"), json!({"mode": "early_state"})),
    ];
    let ran = run(stages).await;
    let failure = ran.failure();
    assert_eq!(failure.code, code::PROTOCOL, "{failure:?}");
    assert_eq!(failure.step, Some(1));
    assert!(
        failure
            .message
            .starts_with(r#"step 1 (eager): line 1: a loader STATE for records not yet sent: {"early":true}"#),
        "{failure:?}"
    );
    assert!(ran.checkpoints().is_empty());
}
