//! `/metrics` and `/health/ready` of a runner. Metrics are process-wide and other tests
//! of this binary run pipelines at the same time, so this one's plugins and pipelines
//! have names no other test uses (their counters move only through it), and the shared
//! slot gauges are asserted as "at least".

#[path = "../../../../shared/service/tests/support/scrape.rs"]
mod scrape;

use std::time::Duration;

use flexcore_runner::worker::SecretSource;
use flexcore_testkit::wait_until;
use serde_json::json;

use crate::{runner_config, stack};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn plugin_executions_records_and_busy_slots_are_exposed() {
    let s = stack(Some(runner_config(
        Duration::from_secs(10),
        SecretSource::Env {
            prefix: "FLEXCORE_TEST_SECRET_".into(),
        },
    )))
    .await;
    let checks = flexcore_runner::worker::metrics::checks(&s.client);
    let addr = flexcore_service::admin::spawn("127.0.0.1:0", "flexcore-runner", checks, s.shutdown.clone())
        .await
        .unwrap()
        .unwrap();
    // Ready once the runner has created its durable consumer.
    wait_until(WAIT, "runner ready", || async { scrape::ready(addr).await.0 == 200 })
        .await
        .unwrap();
    let (_, body) = scrape::ready(addr).await;
    for check in ["nats", "stream:FLEXCORE_WORK", "consumer:FLEXCORE_WORK/flexcore-runner"] {
        assert_eq!(scrape::check_ok(&body, check), Some(true), "{check}: {body}");
    }

    let generator = s
        .register_plain("flexcore-plugin-generator", "metrics-gen", "extractor")
        .await;
    let discard = s
        .register_plain("flexcore-plugin-discard", "metrics-discard", "loader")
        .await;
    let sleeper = s
        .register_plain("flexcore-plugin-misbehave", "metrics-sleep", "extractor")
        .await;

    // A run that succeeds: one ok execution per plugin, its records by pipeline and stream.
    let pipeline = s
        .pipeline(json!({"name": "metrics-orders", "owner": "o", "steps": [
            {"plugin": generator, "config": {"records": 250, "state_every": 100, "stream": "orders"}},
            {"plugin": discard}]}))
        .await;
    let run = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
    let run_id = run["aggregate_id"].as_str().unwrap();
    let done = s.wait_event(run_id, "run.succeeded", WAIT).await;
    assert_eq!(done["counters"], json!({"orders": 250}), "{done}");
    let m = scrape::scrape(addr).await;
    let executions = "flexcore_plugin_executions_total";
    let ok_of = |plugin: &str| m.count(executions, &[("plugin_name", plugin), ("status", "ok")]);
    assert_eq!(ok_of("metrics-gen"), 1.0, "{}", m.text);
    assert_eq!(ok_of("metrics-discard"), 1.0, "{}", m.text);
    let records = m.count(
        "flexcore_run_records_total",
        &[("pipeline", "metrics-orders"), ("stream", "orders")],
    );
    assert_eq!(records, 250.0, "{}", m.text);
    assert!(m.value("flexcore_runner_slots", &[]).unwrap() >= 4.0, "{}", m.text);

    // A run that sleeps holds a slot until it is cancelled; then every stage counts as
    // cancelled.
    let pipeline = s
        .pipeline(json!({"name": "metrics-sleepy", "owner": "o", "steps": [
            {"plugin": sleeper, "config": {"mode": "sleep", "seconds": 600}},
            {"plugin": discard}]}))
        .await;
    let run = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
    let run_id = run["aggregate_id"].as_str().unwrap();
    s.wait_event(run_id, "run.claimed", WAIT).await;
    wait_until(WAIT, "a busy slot", || async {
        scrape::scrape(addr).await.value("flexcore_runner_slots_busy", &[]) >= Some(1.0)
    })
    .await
    .unwrap();
    s.ok("run.cancel", json!({"run_id": run_id})).await;
    wait_until(WAIT, "the cancelled executions counted", || async {
        let m = scrape::scrape(addr).await;
        let cancelled = |plugin: &str| m.count(executions, &[("plugin_name", plugin), ("status", "cancelled")]);
        cancelled("metrics-sleep") == 1.0 && cancelled("metrics-discard") == 1.0
    })
    .await
    .unwrap();
    let m = scrape::scrape(addr).await;
    assert!(m.has_type("flexcore_runner_slots_busy", "gauge"), "{}", m.text);
    assert!(m.value("flexcore_runner_slots_busy", &[]).unwrap() >= 0.0);
    assert_eq!(
        m.value("flexcore_run_records_total", &[("pipeline", "metrics-sleepy")]),
        None,
        "no records delivered: {}",
        m.text
    );
    s.shutdown.cancel();
}
