//! Throughput and instantiation measurements; ignored by default, run in release:
//! `cargo test --release -p flexcore-runner --test it -- --ignored --nocapture bench`.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_generator_mapper_discard() {
    let records = 2_000_000u64;
    let stages = || {
        vec![
            extractor(
                "generator",
                plugin("generator"),
                json!({"records": records, "state_every": 100_000}),
            ),
            transformer(
                "mapper",
                plugin("mapper"),
                json!({"streams": {"*": {"rename": {"id": "key"}}}}),
            ),
            discard(),
        ]
    };
    warm(sandbox(), &stages()).await;
    for _ in 0..5 {
        let ran = run(stages()).await;
        let summary = ran.summary();
        assert_eq!(summary.counters.get("gen"), Some(&records));
        println!(
            "generator → mapper → discard: {records} records in {:?}: {:.0} records/s",
            summary.duration,
            records as f64 / summary.duration.as_secs_f64()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_small_executions() {
    let stages = || {
        vec![
            extractor("generator", plugin("generator"), json!({"records": 1})),
            discard(),
        ]
    };
    warm(sandbox(), &stages()).await;
    let mut took = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        run(stages()).await.summary();
        took.push(started.elapsed());
    }
    took.sort();
    println!(
        "2-stage execution of 1 record: p50 {:?}, p99 {:?}",
        took[took.len() / 2],
        took[took.len() * 99 / 100]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_noop_executions() {
    const NOOP: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;
    let stages = || {
        vec![
            extractor("noop", wat(NOOP), json!({})),
            loader("noop", wat(NOOP), json!({})),
        ]
    };
    warm(sandbox(), &stages()).await;
    let mut took = Vec::new();
    for _ in 0..500 {
        let started = Instant::now();
        run(stages()).await.summary();
        took.push(started.elapsed());
    }
    took.sort();
    println!(
        "2-stage no-op execution: p50 {:?}, p99 {:?}",
        took[took.len() / 2],
        took[took.len() * 99 / 100]
    );
}
