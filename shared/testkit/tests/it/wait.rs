use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use flexcore_testkit::{try_wait_until, wait_until};

#[tokio::test]
async fn waits_until_the_condition_holds() {
    let calls = Arc::new(AtomicUsize::new(0));
    wait_until(Duration::from_secs(5), "the third call", || {
        let calls = calls.clone();
        async move { calls.fetch_add(1, Ordering::SeqCst) >= 2 }
    })
    .await
    .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_timeout_names_what_was_awaited() {
    let err = wait_until(Duration::from_millis(100), "the impossible", || async { false })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the impossible"), "{err:#}");
}

#[tokio::test]
async fn a_hanging_condition_still_times_out() {
    let err = wait_until(Duration::from_millis(100), "a hung probe", || {
        std::future::pending::<bool>()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("a hung probe"), "{err:#}");
}

#[tokio::test]
async fn errors_count_as_not_yet_and_the_last_is_reported() {
    let calls = Arc::new(AtomicUsize::new(0));
    try_wait_until(Duration::from_secs(5), "recovery", || {
        let calls = calls.clone();
        async move {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                bail!("not ready");
            }
            Ok(true)
        }
    })
    .await
    .unwrap();

    let err = try_wait_until(Duration::from_millis(100), "a broken probe", || async {
        let n: u32 = "x".parse()?;
        Ok(n > 0)
    })
    .await
    .unwrap_err();
    let report = format!("{err:#}");
    assert!(
        report.contains("a broken probe") && report.contains("invalid digit"),
        "{report}"
    );
}
