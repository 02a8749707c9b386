//! Limits: wall clock, memory, output caps, fuel, cancellation.

use std::time::Duration;

use flexcore_contracts::model::ResourceLimits;
use flexcore_runner::executor::code;
use flexcore_runner::sandbox::{Sandbox, SandboxConfig};
use serde_json::json;

use crate::helpers::*;

fn limited(mut stage: flexcore_runner::executor::Stage, limits: ResourceLimits) -> flexcore_runner::executor::Stage {
    stage.limits = limits;
    stage
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_is_stopped_at_its_timeout() {
    let spin = limited(
        extractor("spin", plugin("misbehave"), json!({"mode": "loop"})),
        ResourceLimits {
            timeout_seconds: Some(1),
            ..Default::default()
        },
    );
    let ran = run(vec![spin, discard()]).await;
    let failure = ran.failure();
    assert_eq!(failure.code, code::TIMEOUT, "{failure:?}");
    assert_eq!(failure.step, Some(0));
    assert!(!failure.retryable);
    assert!(ran.elapsed >= Duration::from_secs(1), "{:?}", ran.elapsed);
    assert_within_a_second_of(ran.elapsed, Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_parked_in_a_host_call_is_stopped_at_its_timeout() {
    let sleeper = limited(
        extractor(
            "sleeper",
            plugin("misbehave"),
            json!({"mode": "sleep", "seconds": 3600}),
        ),
        ResourceLimits {
            timeout_seconds: Some(1),
            ..Default::default()
        },
    );
    let ran = run(vec![sleeper, discard()]).await;
    assert_eq!(ran.failure().code, code::TIMEOUT, "{:?}", ran.failure());
    assert_within_a_second_of(ran.elapsed, Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocating_past_the_memory_cap_fails_with_memory() {
    let hog = limited(
        extractor("hog", plugin("misbehave"), json!({"mode": "alloc"})),
        ResourceLimits {
            memory_bytes: Some(32 << 20),
            ..Default::default()
        },
    );
    let ran = run(vec![hog, discard()]).await;
    let failure = ran.failure();
    assert_eq!(failure.code, code::MEMORY, "{failure:?}");
    assert_eq!(failure.step, Some(0));
    assert!(failure.message.contains("33554432"), "{failure:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_allocation_under_the_cap_succeeds() {
    let fine = limited(
        extractor("fine", plugin("misbehave"), json!({"mode": "alloc", "bytes": 8 << 20})),
        ResourceLimits {
            memory_bytes: Some(64 << 20),
            ..Default::default()
        },
    );
    let ran = run(vec![fine, discard()]).await;
    ran.summary();
    assert!(
        ran.logs().iter().any(|l| l.contains("allocated 8388608 bytes")),
        "{:?}",
        ran.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_flood_is_cut_at_its_cap() {
    let flood = limited(
        extractor("flood", plugin("misbehave"), json!({"mode": "flood"})),
        ResourceLimits {
            max_output_bytes: Some(1 << 20),
            ..Default::default()
        },
    );
    let ran = run(vec![flood, discard()]).await;
    let failure = ran.failure();
    assert_eq!(failure.code, code::OUTPUT_LIMIT, "{failure:?}");
    assert_eq!(failure.step, Some(0));
    assert!(failure.message.contains("stdout cap of 1048576 bytes"), "{failure:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_is_rate_limited_then_cut_at_its_cap() {
    let chatty = limited(
        extractor("chatty", wat(crate::hostile_modules::STDERR_FLOOD), json!({})),
        ResourceLimits {
            max_output_bytes: Some(64 << 10),
            ..Default::default()
        },
    );
    let ran = run(vec![chatty, discard()]).await;
    let failure = ran.failure();
    assert_eq!(failure.code, code::OUTPUT_LIMIT, "{failure:?}");
    assert!(failure.message.contains("stderr cap of 65536 bytes"), "{failure:?}");
    let logs = ran.logs();
    let per_second = sandbox().defaults().log_lines_per_second as usize;
    // ~6000 lines were written within well under a second or two.
    assert!(logs.len() <= 3 * (per_second + 1), "{} log lines", logs.len());
    assert!(logs.iter().filter(|l| **l == "a log line").count() >= per_second);
    assert!(logs.iter().any(|l| l.contains("log truncated")), "{logs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fuel_budget_stops_a_loop_when_the_runner_meters_fuel() {
    let metered = Sandbox::new(SandboxConfig {
        fuel_metering: true,
        max_instances: 8,
        ..Default::default()
    })
    .unwrap();
    let spin = limited(
        extractor("spin", plugin("misbehave"), json!({"mode": "loop"})),
        ResourceLimits {
            fuel: Some(50_000_000),
            timeout_seconds: Some(60),
            ..Default::default()
        },
    );
    let ran = run_on(&metered, vec![spin, discard()], None, None).await;
    let failure = ran.failure();
    assert_eq!(failure.code, code::TIMEOUT, "{failure:?}");
    assert!(failure.message.contains("fuel"), "{failure:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fuel_limit_is_refused_by_a_runner_that_does_not_meter_fuel() {
    let spin = limited(
        extractor("spin", plugin("misbehave"), json!({"mode": "loop"})),
        ResourceLimits {
            fuel: Some(1000),
            ..Default::default()
        },
    );
    let ran = run(vec![spin, discard()]).await;
    let failure = ran.failure();
    assert_eq!(failure.code, code::SANDBOX, "{failure:?}");
    assert!(!failure.retryable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_spinning_and_a_sleeping_execution_within_a_second() {
    let after = Duration::from_millis(300);
    for mode in [json!({"mode": "loop"}), json!({"mode": "sleep", "seconds": 3600})] {
        let stages = vec![extractor("busy", plugin("misbehave"), mode), discard()];
        let ran = run_on(sandbox(), stages, None, Some(after)).await;
        let failure = ran.failure();
        assert_eq!(failure.code, code::CANCELLED, "{failure:?}");
        assert!(!failure.retryable);
        assert_within_a_second_of(ran.elapsed, after);
    }
}
