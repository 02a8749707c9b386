//! `flexctl schedule backfill` against the real command and projection services.

use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use flexcore_config::{Secret, Settings};
use flexctl::schedule::{run_backfill, BackfillArgs, BackfillOverlap, SlotResult};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{operator_api, spawn_service, Service};

struct Env {
    service: Service,
    client: async_nats::Client,
    /// The same connection, signing as flexctl does.
    api: flexctl::api::Api,
}

async fn env() -> Env {
    let service = spawn_service().await;
    let mut settings = Settings::default();
    settings.database.url = Secret::new(service.db.url.clone());
    service.nats.settings_for("projection", &mut settings);
    settings.database.max_connections = 8;
    let (pool, nats) = flexcore_projection::connect(&settings).await.unwrap();
    let token = service.shutdown.clone();
    tokio::spawn(async move { flexcore_projection::run(&settings, nats, pool, token).await });
    let client = service.nats.client().await.unwrap();
    let api = operator_api(client.clone());
    Env { service, client, api }
}

impl Env {
    /// The reply, or `{"ok": false}` while nobody answers yet.
    async fn send(&self, subject: String, body: Value) -> Value {
        match self
            .client
            .request(subject, serde_json::to_vec(&body).unwrap().into())
            .await
        {
            Ok(reply) => serde_json::from_slice(&reply.payload).unwrap(),
            Err(error) => json!({"ok": false, "error": error.to_string()}),
        }
    }

    async fn ok(&self, command: &str, body: Value) -> Uuid {
        let reply = self.send(format!("flexcore.cmd.{command}"), body.clone()).await;
        assert_eq!(reply["ok"], json!(true), "{command} {body} -> {reply}");
        reply["aggregate_id"].as_str().unwrap().parse().unwrap()
    }

    /// A pipeline allowing `max` active runs and an hourly schedule on it, projected.
    async fn hourly(&self, name: &str, max: u32) -> Uuid {
        let digest = format!("sha256:{}", "ab".repeat(32));
        for (plugin, kind) in [("csv", "extractor"), ("jsonl", "loader")] {
            self.send(
                "flexcore.cmd.plugin.register".into(),
                json!({"name": plugin, "version": "1.0.0", "kind": kind, "module_digest": digest}),
            )
            .await;
        }
        let pipeline = self
            .ok(
                "pipeline.create",
                json!({"name": name, "owner": "o", "max_active_runs": max, "steps": [{"plugin": "csv@1.0.0"}, {"plugin": "jsonl@1.0.0"}]}),
            )
            .await;
        // Paused: the backfill is the only thing requesting its runs.
        let schedule = self
            .ok(
                "schedule.create",
                json!({"pipeline_id": pipeline, "cron": "0 * * * *", "paused": true}),
            )
            .await;
        flexcore_testkit::wait_until(Duration::from_secs(20), "schedule projected", || async {
            self.send("flexcore.qry.schedule.get".into(), json!({"id": schedule}))
                .await["ok"]
                == json!(true)
        })
        .await
        .unwrap();
        schedule
    }

    async fn recorded(&self, aggregate: Uuid, event_type: &str) -> Vec<(Value, DateTime<Utc>)> {
        sqlx::query_as(
            "SELECT data, recorded_at FROM events WHERE aggregate_id = $1 AND event_type = $2 ORDER BY version",
        )
        .bind(aggregate)
        .bind(event_type)
        .fetch_all(&self.service.db.pool)
        .await
        .unwrap()
    }
}

/// The last four whole hours.
fn four_hours() -> (DateTime<Utc>, DateTime<Utc>) {
    let hour = Utc::now().duration_trunc(chrono::Duration::hours(1)).unwrap();
    (hour - chrono::Duration::hours(4), hour - chrono::Duration::hours(1))
}

fn args(schedule: Uuid, overlap: BackfillOverlap) -> BackfillArgs {
    let (from, to) = four_hours();
    BackfillArgs {
        schedule_id: schedule.to_string(),
        from,
        to,
        overlap,
    }
}

#[tokio::test]
async fn backfill_requests_each_past_slot_once_and_is_idempotent() {
    let e = env().await;
    let schedule = e.hourly("backfilled", 10).await;
    let lines = run_backfill(&e.api, &args(schedule, BackfillOverlap::Allow))
        .await
        .unwrap();
    let (from, _) = four_hours();
    let slots: Vec<_> = (0..4).map(|i| from + chrono::Duration::hours(i)).collect();
    assert_eq!(lines.iter().map(|l| l.slot).collect::<Vec<_>>(), slots);
    assert!(lines.iter().all(|l| l.result == SlotResult::Requested), "{lines:?}");
    for l in &lines {
        assert_eq!(l.run_id, flexcore_contracts::ids::scheduled_run_id(schedule, l.slot));
        let (requested, _) = e.recorded(l.run_id, "run.requested").await.remove(0);
        assert_eq!(requested["trigger"], json!("backfill"));
        assert_eq!(requested["scheduled_for"], json!(l.slot));
    }
    // Again: every run exists already, nothing new is requested.
    let again = run_backfill(&e.api, &args(schedule, BackfillOverlap::Allow))
        .await
        .unwrap();
    assert!(again.iter().all(|l| l.result == SlotResult::Existed), "{again:?}");
    e.service.shutdown.cancel();
}

#[tokio::test]
async fn backfill_skip_records_slots_that_find_the_pipeline_busy() {
    let e = env().await;
    let schedule = e.hourly("busy", 1).await;
    let lines = run_backfill(&e.api, &args(schedule, BackfillOverlap::Skip))
        .await
        .unwrap();
    let results: Vec<_> = lines.iter().map(|l| l.result.clone()).collect();
    assert_eq!(
        results,
        [
            SlotResult::Requested,
            SlotResult::Skipped,
            SlotResult::Skipped,
            SlotResult::Skipped
        ]
    );
    let skipped = e.recorded(schedule, "schedule.slot_skipped").await;
    assert_eq!(skipped.len(), 3);
    assert!(skipped.iter().all(|(d, _)| d["reason"] == json!("backfill_overlap")));
    e.service.shutdown.cancel();
}

#[tokio::test]
async fn backfill_buffer_one_runs_the_slots_one_after_the_other() {
    let e = env().await;
    let schedule = e.hourly("sequential", 10).await;
    let (from, _) = four_hours();
    // Plays the runner: ends each run as soon as it appears.
    let ender = {
        let client = e.client.clone();
        tokio::spawn(async move {
            for i in 0..4 {
                let run = flexcore_contracts::ids::scheduled_run_id(schedule, from + chrono::Duration::hours(i));
                loop {
                    let reply = client
                        .request(
                            "flexcore.cmd.run.cancel",
                            serde_json::to_vec(&json!({"run_id": run})).unwrap().into(),
                        )
                        .await
                        .unwrap();
                    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
                    if reply["ok"] == json!(true) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
    };
    let lines = run_backfill(&e.api, &args(schedule, BackfillOverlap::BufferOne))
        .await
        .unwrap();
    ender.await.unwrap();
    assert!(lines.iter().all(|l| l.result == SlotResult::Requested), "{lines:?}");
    // Each run was requested only after the previous one had ended.
    for pair in lines.windows(2) {
        let ended = e.recorded(pair[0].run_id, "run.cancelled").await[0].1;
        let next = e.recorded(pair[1].run_id, "run.requested").await[0].1;
        assert!(
            next > ended,
            "{} requested at {next}, before {} ended at {ended}",
            pair[1].slot,
            pair[0].slot
        );
    }
    e.service.shutdown.cancel();
}

#[tokio::test]
async fn backfill_bad_input_is_explained() {
    let e = env().await;
    let schedule = e.hourly("bad", 1).await;
    let mut reversed = args(schedule, BackfillOverlap::Allow);
    std::mem::swap(&mut reversed.from, &mut reversed.to);
    let err = run_backfill(&e.api, &reversed).await.unwrap_err().to_string();
    assert!(err.contains("is before --from"), "{err}");
    let mut future = args(schedule, BackfillOverlap::Allow);
    future.to = Utc::now() + chrono::Duration::hours(1);
    let err = run_backfill(&e.api, &future).await.unwrap_err().to_string();
    assert!(err.contains("in the future"), "{err}");
    let unknown = args(Uuid::new_v4(), BackfillOverlap::Allow);
    let err = format!("{:#}", run_backfill(&e.api, &unknown).await.unwrap_err());
    assert!(err.contains("not_found"), "{err}");
    e.service.shutdown.cancel();
}
