//! Whole pipelines that work: wiring, counts, checkpoints, files.

use std::time::Duration;

use flexcore_contracts::model::{DirAccess, DirGrant, StreamCounters};
use flexcore_runner::executor::code;
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stages_produce_checkpoints_counts_and_files() {
    let out = tempfile::tempdir().unwrap();
    let records = 25_000u64;
    let mut jsonl = loader("jsonl", plugin("jsonl"), json!({"directory": "/out/run"}));
    jsonl.grants.dirs = vec![DirGrant {
        host_path: out.path().to_string_lossy().into_owned(),
        guest_path: "/out".into(),
        access: DirAccess::ReadWrite,
    }];
    let stages = vec![
        extractor(
            "generator",
            plugin("generator"),
            json!({"records": records, "stream": "users", "state_every": 10_000}),
        ),
        transformer(
            "mapper",
            plugin("mapper"),
            json!({"streams": {"users": {"rename": {"id": "user_id"}, "set": {"source": "gen"}}}}),
        ),
        jsonl,
    ];
    let ran = run(stages).await;
    let summary = ran.summary();
    assert_eq!(summary.counters, StreamCounters::from([("users".to_owned(), records)]));
    assert_eq!(
        summary
            .last_state
            .as_ref()
            .map(flexcore_contracts::OpaqueJson::to_value),
        Some(json!({"generated": records}))
    );

    let checkpoints = ran.checkpoints();
    let states: Vec<_> = checkpoints.iter().map(|(s, _)| s.clone()).collect();
    assert_eq!(states.last(), Some(&json!({"generated": records})));
    // In order, each with the records sent before it.
    let mut previous = 0;
    for (state, counters) in &checkpoints {
        let generated = state["generated"].as_u64().unwrap();
        assert!(generated > previous, "{states:?}");
        assert_eq!(counters.get("users"), Some(&generated));
        previous = generated;
    }

    let written = std::fs::read_to_string(out.path().join("run/users.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = written.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len() as u64, records);
    assert_eq!(lines[0]["source"], "gen");
    assert!(
        lines[0].get("user_id").is_some() && lines[0].get("id").is_none(),
        "{}",
        lines[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transformer_that_filters_changes_what_the_loader_counts() {
    let stages = vec![
        extractor("generator", plugin("generator"), json!({"records": 1000})),
        transformer(
            "mapper",
            plugin("mapper"),
            json!({"streams": {"*": {"filter": {"field": "id", "op": "gt", "value": 600}}}}),
        ),
        discard(),
    ];
    let ran = run(stages).await;
    assert_eq!(ran.summary().counters.get("gen"), Some(&400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_log_to_events_with_their_step() {
    let stages = vec![
        extractor("generator", plugin("generator"), json!({"records": 10})),
        loader("failing", plugin("misbehave"), json!({"mode": "exit_error"})),
    ];
    let ran = run(stages).await;
    let failure = ran.failure();
    assert_eq!(failure.code, code::EXIT_STATUS, "{failure:?}");
    assert_eq!(
        failure.message,
        "step 1 (failing): exited with status 2: misbehave: failing on purpose"
    );
    assert!(failure.retryable);
    assert!(ran.events.iter().any(|e| matches!(e,
        flexcore_runner::executor::ExecEvent::Log { step: 1, plugin, line }
            if plugin == "failing" && line == "ERROR misbehave: failing on purpose")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_must_be_extractor_transformers_loader() {
    let ran = run(vec![discard()]).await;
    assert_eq!(ran.failure().code, code::PROTOCOL);
    let ran = run(vec![
        discard(),
        extractor("generator", plugin("generator"), json!({"records": 1})),
    ])
    .await;
    assert!(
        ran.failure()
            .message
            .starts_with("step 0 (discard) is of kind loader, expected kind extractor"),
        "{:?}",
        ran.failure()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_stage_stops_the_others_within_a_second() {
    let cases = [
        // A spinning extractor is interrupted when the loader fails.
        (
            json!({"mode": "loop"}),
            json!({"mode": "exit_error"}),
            1,
            code::EXIT_STATUS,
        ),
        // A loader parked in a sleep is dropped when the extractor traps.
        (
            json!({"mode": "trap"}),
            json!({"mode": "sleep", "seconds": 3600}),
            0,
            code::TRAP,
        ),
    ];
    for (first, last, step, expected) in cases {
        let stages = vec![
            extractor("first", plugin("misbehave"), first),
            loader("last", plugin("misbehave"), last),
        ];
        let ran = run(stages).await;
        let failure = ran.failure();
        assert_eq!(
            (failure.code.as_str(), failure.step),
            (expected, Some(step)),
            "{failure:?}"
        );
        assert_within_a_second_of(ran.elapsed, Duration::ZERO);
    }
}
