//! Plugin output that must not grow the event log: a STATE flood on the real stack.

use std::time::{Duration, Instant};

use flexcore_runner::worker::SecretSource;
use serde_json::json;

use crate::{runner_config, stack};

/// 20,000 STATEs (one per record), all echoed by the loader: the run commits at most one
/// checkpoint per second (`runner.checkpoint_interval_ms`), the last one being the final
/// STATE. Before coalescing, every echo was a `run.checkpoint`: 20,000 STATEs made
/// 40,003 permanent events.
#[tokio::test]
async fn a_state_flood_commits_at_most_one_checkpoint_a_second() {
    let s = stack(Some(runner_config(
        Duration::from_secs(10),
        SecretSource::Env {
            prefix: "FLEXCORE_TEST_SECRET_".into(),
        },
    )))
    .await;
    let generator = s.register_plain("flexcore-plugin-generator", "gen", "extractor").await;
    let discard = s.register_plain("flexcore-plugin-discard", "discard", "loader").await;
    let pipeline = s
        .pipeline(json!({"name": "states", "owner": "o", "steps": [
            {"plugin": generator, "config": {"records": 20_000, "state_every": 1}},
            {"plugin": discard, "config": {}}]}))
        .await;
    let started = Instant::now();
    let run = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
    let run_id = run["aggregate_id"].as_str().unwrap();
    let done = s.wait_event(run_id, "run.succeeded", Duration::from_secs(60)).await;
    let took = started.elapsed();
    assert_eq!(done["counters"], json!({"gen": 20_000}), "{done}");
    let checkpoints = s.run_events(run_id, "run.checkpointed").await;
    assert!(
        checkpoints.len() as u64 <= took.as_secs() + 2,
        "{} checkpoints in {took:?}",
        checkpoints.len()
    );
    assert_eq!(checkpoints.last().unwrap()["state"], json!({"generated": 20_000}));
    s.shutdown.cancel();
}
