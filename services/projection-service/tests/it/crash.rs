//! Kill -9 the projection service mid-burst and restart it: no event lost, none applied
//! twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::consistency::assert_read_models_match;
use crate::{burst, stack};

#[tokio::test]
async fn a_killed_projection_service_resumes_exactly_once() {
    let s = stack(false).await;
    s.register_plugins().await;
    let mut first = s.spawn_projection_process();
    let restarted = AtomicBool::new(false);
    // Bursts keep coming until the service was killed and restarted, then one more.
    let load = async {
        let mut round = 0;
        loop {
            let last = restarted.load(Ordering::SeqCst);
            burst(&s, &format!("k{round}"), 12, 12).await;
            round += 1;
            if last {
                break;
            }
        }
    };
    let chaos = async {
        // Kill it once it has applied part of the burst.
        flexcore_testkit::wait_until(Duration::from_secs(60), "projection applying", || async {
            let applied: Option<i64> =
                sqlx::query_scalar("SELECT events_applied FROM read.projections WHERE name = 'runs'")
                    .fetch_optional(&s.db.pool)
                    .await
                    .ok()
                    .flatten();
            applied.is_some_and(|n| n > 100)
        })
        .await
        .unwrap();
        first.kill().unwrap(); // SIGKILL: no drain, no final commit
        first.wait().unwrap();
        let at_kill = s.event_count().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = s.spawn_projection_process();
        restarted.store(true, Ordering::SeqCst);
        (second, at_kill)
    };
    let ((), (mut second, at_kill)) = tokio::join!(load, chaos);
    assert!(s.event_count().await > at_kill, "the kill happened mid-burst");
    s.caught_up().await;
    assert_read_models_match(&s).await;
    let events = s.event_count().await;
    for p in s.data("projection.list", json!({})).await.as_array().unwrap() {
        assert_eq!(
            p["events_applied"],
            json!(events),
            "{}: every event applied exactly once across the crash",
            p["name"]
        );
    }
    second.kill().unwrap();
    second.wait().unwrap();
    s.stop().await;
}
