//! Run timers: retries after back-off, lease expiry. The test plays the runner by sending
//! its commands.

use chrono::Duration;
use flexcore_contracts::model::RetryPolicy;
use serde_json::json;

use super::*;

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff_seconds: 10,
        max_backoff_seconds: 600,
        multiplier: 2.0,
    }
}

async fn request(s: &Stack, pipeline: Uuid) -> Uuid {
    let reply = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
    reply["aggregate_id"].as_str().unwrap().parse().unwrap()
}

async fn claim(s: &Stack, run: Uuid, attempt: u32, lease: u64) {
    s.ok(
        "run.claim",
        json!({"run_id": run, "attempt": attempt, "runner_id": "test-runner", "lease_seconds": lease}),
    )
    .await;
}

async fn fail(s: &Stack, run: Uuid, attempt: u32, retryable: bool) -> DateTime<Utc> {
    s.ok(
        "run.fail",
        json!({"run_id": run, "attempt": attempt, "retryable": retryable, "error": {"code": "plugin_trap", "message": "boom"}}),
    )
    .await;
    s.events(run, "run.failed").await.last().unwrap().1
}

/// A run of a new pipeline `name` (three attempts, 1 s back-off) claimed with a 10 s lease,
/// the clock 8 s later: its replica, the run and when it was claimed.
async fn leased_run(s: &Stack, name: &str) -> (Replica, Uuid, DateTime<Utc>) {
    let pipeline = s
        .pipeline(
            name,
            json!({"retry": {"max_attempts": 3, "initial_backoff_seconds": 1}}),
        )
        .await;
    let replica = s.replica("solo");
    let run = request(s, pipeline).await;
    claim(s, run, 1, 10).await;
    let claimed_at = s.events(run, "run.claimed").await[0].1;
    s.clock.set(claimed_at + Duration::seconds(8));
    s.settle().await;
    (replica, run, claimed_at)
}

/// Fails twice retryably, then succeeds: three attempts, each retry exactly at the failure
/// plus the policy's back-off for that attempt (not a moment earlier).
#[tokio::test]
async fn retryable_failures_are_retried_after_back_off_until_success() {
    let s = stack().await;
    let pipeline = s.pipeline("flaky", json!({"retry": policy()})).await;
    let replica = s.replica("solo");
    let run = request(&s, pipeline).await;
    let mut gaps = Vec::new();
    for attempt in 1..=2u32 {
        claim(&s, run, attempt, 60).await;
        let failed_at = fail(&s, run, attempt, true).await;
        let backoff = Duration::from_std(policy().backoff(attempt, run)).unwrap();
        let due = failed_at + backoff;
        s.clock.set(due - Duration::milliseconds(500));
        s.settle().await;
        assert_eq!(
            s.events(run, "run.retried").await.len(),
            attempt as usize - 1,
            "retried early"
        );
        s.clock.set(due);
        let retried = s.wait_events(run, "run.retried", attempt as usize).await;
        assert_eq!(retried.last().unwrap().0["attempt"], json!(attempt + 1));
        gaps.push(backoff.num_milliseconds() as f64 / 1000.0);
    }
    // 10 s then 20 s, each within ±20 % jitter.
    assert!(
        (8.0..=12.0).contains(&gaps[0]) && (16.0..=24.0).contains(&gaps[1]),
        "{gaps:?}"
    );
    claim(&s, run, 3, 60).await;
    s.ok("run.succeed", json!({"run_id": run, "attempt": 3})).await;
    let types: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM events WHERE aggregate_id = $1 ORDER BY version")
            .bind(run)
            .fetch_all(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(
        types,
        [
            "run.requested",
            "run.claimed",
            "run.failed",
            "run.retried",
            "run.claimed",
            "run.failed",
            "run.retried",
            "run.claimed",
            "run.succeeded"
        ]
    );

    // A non-retryable failure is final: no retry however long one waits.
    let other = request(&s, pipeline).await;
    claim(&s, other, 1, 60).await;
    fail(&s, other, 1, false).await;
    assert_eq!(s.events(other, "run.failed").await[0].0["final"], json!(true));
    s.clock.advance(Duration::hours(1));
    s.settle().await;
    assert!(s.events(other, "run.retried").await.is_empty());
    replica.stop().await;
    s.stop();
}

/// Heartbeats nobody signed, or signed by an identity that is not a runner, hold no lease:
/// the attempt is timed out when its lease lapses as if they had not come.
#[tokio::test]
async fn forged_heartbeats_hold_no_lease() {
    let s = stack().await;
    let (replica, run, claimed_at) = leased_run(&s, "forged-beats").await;
    let subject = format!("flexcore.sys.run.{run}.heartbeat");
    let body = serde_json::to_vec(&json!({"run_id": run, "attempt": 1, "runner_id": "test-runner"})).unwrap();
    s.client.publish(subject.clone(), body.clone().into()).await.unwrap();
    let headers = s.nats.identity("app").unwrap().signed_headers(&subject, &body);
    s.client
        .publish_with_headers(subject, headers, body.into())
        .await
        .unwrap();
    s.client.flush().await.unwrap();
    s.settle().await;
    s.clock.set(claimed_at + Duration::seconds(12));
    s.settle().await;
    let timed_out = s.wait_events(run, "run.timed_out", 1).await;
    assert_eq!(timed_out.len(), 1, "the forged heartbeats held the lease");
    replica.stop().await;
    s.stop();
}

/// A claimed attempt that stops heartbeating is timed out once its lease lapses (not while
/// heartbeats arrive) and then retried; the stale attempt's commands are refused.
#[tokio::test]
async fn a_silent_attempt_is_timed_out_after_its_lease_and_retried() {
    let s = stack().await;
    let (replica, run, claimed_at) = leased_run(&s, "leased").await;
    // A heartbeat at +8 s holds the lease until +18 s.
    let beat = json!({"run_id": run, "attempt": 1, "runner_id": "test-runner"});
    let subject = format!("flexcore.sys.run.{run}.heartbeat");
    let body = serde_json::to_vec(&beat).unwrap();
    // Signed by a runner: anyone could send an unsigned one.
    let headers = s.nats.identity("runner").unwrap().signed_headers(&subject, &body);
    s.client
        .publish_with_headers(subject, headers, body.into())
        .await
        .unwrap();
    s.client.flush().await.unwrap();
    s.settle().await;
    s.clock.set(claimed_at + Duration::seconds(12));
    s.settle().await;
    assert!(
        s.events(run, "run.timed_out").await.is_empty(),
        "timed out despite the heartbeat"
    );
    s.clock
        .set(claimed_at + Duration::seconds(18) + Duration::milliseconds(500));
    let (timed_out, at) = s.wait_event(run, "run.timed_out").await;
    assert_eq!(timed_out["reason"], json!("lease_expired"));
    assert_eq!(timed_out["attempt"], json!(1));
    assert_eq!(timed_out["final"], json!(false));
    s.clock.set(at + Duration::seconds(2));
    let (retried, _) = s.wait_event(run, "run.retried").await;
    assert_eq!(retried["attempt"], json!(2));
    let late = s.send("run.succeed", json!({"run_id": run, "attempt": 1})).await;
    assert_eq!(late["error"]["code"], json!("conflict"), "{late}");
    replica.stop().await;
    s.stop();
}

/// A run older than its pipeline's run timeout is timed out for good, whatever its state.
#[tokio::test]
async fn a_run_past_its_timeout_is_stopped_for_good() {
    let s = stack().await;
    let pipeline = s.pipeline("bounded", json!({"run_timeout_seconds": 60})).await;
    let replica = s.replica("solo");
    let run = request(&s, pipeline).await;
    claim(&s, run, 1, 600).await;
    let requested_at = s.events(run, "run.requested").await[0].1;
    s.clock.set(requested_at + Duration::seconds(59));
    s.settle().await;
    assert!(s.events(run, "run.timed_out").await.is_empty());
    s.clock.set(requested_at + Duration::seconds(61));
    let (timed_out, _) = s.wait_event(run, "run.timed_out").await;
    assert_eq!(timed_out["reason"], json!("run_timeout"));
    assert_eq!(timed_out["final"], json!(true));
    replica.stop().await;
    s.stop();
}
