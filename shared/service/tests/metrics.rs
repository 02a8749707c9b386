//! `GET /metrics` of the admin server, and the JetStream stream and consumer checks,
//! against a real NATS server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "support/scrape.rs"]
mod scrape;

use std::time::Duration;

use async_nats::jetstream::{consumer, stream};
use flexcore_service::admin::{self, Check as _, Checks, JetStreamCheck};
use flexcore_testkit::TestNats;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn metrics_are_served_in_the_text_format_with_the_process_metrics() {
    let shutdown = CancellationToken::new();
    let addr = admin::spawn("127.0.0.1:0", "flexcore-test", Checks::new(), shutdown.clone())
        .await
        .unwrap()
        .unwrap();
    flexcore_service::metrics::scheduler().fired(0.2);
    let m = scrape::scrape(addr).await;
    assert!(
        m.has_type("flexcore_schedule_fire_lag_seconds", "histogram"),
        "{}",
        m.text
    );
    assert!(
        m.count("flexcore_schedule_fire_lag_seconds_count", &[]) >= 1.0,
        "{}",
        m.text
    );
    assert!(
        m.count("flexcore_schedule_fire_lag_seconds_bucket", &[("le", "0.25")]) >= 1.0,
        "{}",
        m.text
    );
    if cfg!(target_os = "linux") {
        assert!(m.has_type("process_cpu_seconds_total", "counter"), "{}", m.text);
        assert!(m.value("process_resident_memory_bytes", &[]).unwrap() > 0.0);
        assert!(m.value("process_max_fds", &[]).unwrap() > 0.0);
    }
    shutdown.cancel();
}

#[tokio::test]
async fn stream_and_consumer_checks_pass_while_they_exist() {
    let nats = TestNats::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let js = nats.jetstream().await.unwrap();
    let stream_check = JetStreamCheck::stream(client.clone(), "WORK");
    let consumer_check = JetStreamCheck::consumer(client.clone(), "WORK", "workers");
    assert_eq!(stream_check.name(), "stream:WORK");
    assert_eq!(consumer_check.name(), "consumer:WORK/workers");
    let outcome = stream_check.check().await;
    assert!(!outcome.ok, "no stream yet: {outcome:?}");

    let work = js
        .create_stream(stream::Config {
            name: "WORK".into(),
            subjects: vec!["work.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(stream_check.check().await.ok);
    let outcome = consumer_check.check().await;
    assert!(!outcome.ok, "no consumer yet: {outcome:?}");
    work.create_consumer(consumer::pull::Config {
        durable_name: Some("workers".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let outcome = consumer_check.check().await;
    assert!(outcome.ok, "{outcome:?}");

    // Through Checks, as /health/ready runs them.
    let checks = Checks::new()
        .stream(client.clone(), "WORK")
        .consumer(client.clone(), "WORK", "workers")
        .timeout(Duration::from_secs(2));
    assert!(checks.run().await.iter().all(|c| c.ok));
    js.delete_stream("WORK").await.unwrap();
    let reports = checks.run().await;
    assert!(reports.iter().all(|c| !c.ok), "{reports:?}");
}
