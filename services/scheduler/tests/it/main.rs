//! Scheduler integration tests: real Postgres, a private real NATS JetStream server per test,
//! the real command service, scheduler replicas in-process on a shared manual clock (so
//! minutes and DST days pass in milliseconds). Outcomes are read from the event store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod firing;
mod log;
mod process;
mod runs;
mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flexcore_config::{SchedulerSettings, Settings};
use flexcore_scheduler::{Clock, ManualClock};
use flexcore_testkit::{TestDb, TestNats};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct Stack {
    pub db: TestDb,
    pub nats: TestNats,
    pub client: async_nats::Client,
    pub clock: Arc<ManualClock>,
    shutdown: CancellationToken,
}

/// One scheduler replica; dropping the handle does not stop it, [`Replica::kill`] does.
pub struct Replica {
    task: JoinHandle<anyhow::Result<()>>,
    stop: CancellationToken,
}

impl Replica {
    /// Gone at once, without its goodbye (like SIGKILL: the others notice its silence).
    pub fn kill(self) {
        self.task.abort();
    }

    /// What the replica ended with, once it ends by itself (within 30 s).
    pub async fn ended(self) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the replica ends within 30 s")
            .unwrap()
    }

    /// Stopped cleanly.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

pub async fn stack() -> Stack {
    flexcore_testkit::init_tracing();
    let db = TestDb::create().await.unwrap();
    let nats = TestNats::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let mut settings = Settings::default();
    settings.database.url = flexcore_config::Secret::new(db.url.clone());
    nats.settings_for("command", &mut settings);
    settings.relay.idle_poll = Duration::from_millis(50);
    settings.database.max_connections = 8;
    let shutdown = CancellationToken::new();
    let (pool, service_client) = flexcore_command::connect(&settings).await.unwrap();
    let token = shutdown.clone();
    tokio::spawn(async move { flexcore_command::run(&settings, service_client, pool, token).await });
    let stack = Stack {
        db,
        nats,
        client,
        clock: ManualClock::new(whole_second(Utc::now())),
        shutdown,
    };
    flexcore_testkit::nats::commands_answered(&stack.client).await.unwrap();
    stack
}

pub fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap()
}

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

impl Stack {
    /// A scheduler replica on the manual clock. Presence is fast, so a dead replica's share
    /// is taken over within half a second of real time; the takeover grace is long in clock
    /// time, since tests move the clock by many seconds in a few milliseconds.
    pub fn replica(&self, name: &str) -> Replica {
        self.replica_with(name, SchedulerSettings::default())
    }

    /// [`Self::replica`] with `settings` (its instance id, presence and grace are the
    /// tests').
    pub fn replica_with(&self, name: &str, settings: SchedulerSettings) -> Replica {
        let settings = SchedulerSettings {
            instance_id: name.to_owned(),
            presence_interval: Duration::from_millis(150),
            takeover_grace: Duration::from_millis(30_000),
            ..settings
        };
        let stop = self.shutdown.child_token();
        let (client, clock, token) = (self.client.clone(), Clock::Manual(self.clock.clone()), stop.clone());
        // Replicas a, b and c have identities of their own (the actor names them).
        let identity = if flexcore_testkit::nats::SCHEDULER_REPLICAS.contains(&name) {
            format!("scheduler-{name}")
        } else {
            "scheduler".to_owned()
        };
        let credentials = self.nats.credentials(&identity).unwrap();
        let task = tokio::spawn(async move {
            flexcore_scheduler::run(&settings, client, credentials, Duration::from_secs(5), clock, token).await
        });
        Replica { task, stop }
    }

    pub async fn send(&self, command: &str, body: Value) -> Value {
        let reply = tokio::time::timeout(
            Duration::from_secs(15),
            self.nats.signed_request(
                &self.client,
                &format!("flexcore.cmd.{command}"),
                serde_json::to_vec(&body).unwrap(),
            ),
        )
        .await
        .expect("reply within 15 s")
        .expect("request");
        serde_json::from_slice(&reply.payload).unwrap()
    }

    pub async fn ok(&self, command: &str, body: Value) -> Value {
        let reply = self.send(command, body.clone()).await;
        assert_eq!(reply["ok"], json!(true), "{command} {body} -> {reply}");
        reply
    }

    fn id(reply: &Value) -> Uuid {
        reply["aggregate_id"].as_str().unwrap().parse().unwrap()
    }

    /// Two plugins and a pipeline built on them, with extra pipeline fields.
    pub async fn pipeline(&self, name: &str, extra: Value) -> Uuid {
        let digest = format!("sha256:{}", "ab".repeat(32));
        for (plugin, kind) in [("csv", "extractor"), ("jsonl", "loader")] {
            let r = self
                .send(
                    "plugin.register",
                    json!({"name": plugin, "version": "1.0.0", "kind": kind, "module_digest": digest}),
                )
                .await;
            assert!(r["ok"] == json!(true) || r["error"]["code"] == json!("conflict"), "{r}");
        }
        let mut body =
            json!({"name": name, "owner": "team", "steps": [{"plugin": "csv@1.0.0"}, {"plugin": "jsonl@1.0.0"}]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        Self::id(&self.ok("pipeline.create", body).await)
    }

    pub async fn schedule(&self, pipeline: Uuid, spec: Value) -> Uuid {
        let mut body = json!({"pipeline_id": pipeline});
        body.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
        Self::id(&self.ok("schedule.create", body).await)
    }

    /// Slots of `schedule` that have a run, in order.
    pub async fn fired(&self, schedule: Uuid) -> Vec<DateTime<Utc>> {
        let slots: Vec<String> = sqlx::query_scalar(
            "SELECT data->>'scheduled_for' FROM events WHERE event_type = 'run.requested' \
             AND data->>'schedule_id' = $1 ORDER BY (data->>'scheduled_for')::timestamptz",
        )
        .bind(schedule.to_string())
        .fetch_all(&self.db.pool)
        .await
        .unwrap();
        slots.iter().map(|s| at(s)).collect()
    }

    /// Data of the schedule's events of `event_type`, in order.
    pub async fn schedule_events(&self, schedule: Uuid, event_type: &str) -> Vec<Value> {
        self.events(schedule, event_type)
            .await
            .into_iter()
            .map(|(d, _)| d)
            .collect()
    }

    /// Data and recording time of the aggregate's events of `event_type`, in order.
    pub async fn events(&self, aggregate: Uuid, event_type: &str) -> Vec<(Value, DateTime<Utc>)> {
        sqlx::query_as(
            "SELECT data, recorded_at FROM events WHERE aggregate_id = $1 AND event_type = $2 ORDER BY version",
        )
        .bind(aggregate)
        .bind(event_type)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    /// Waits until the slot's run exists.
    pub async fn wait_fired(&self, schedule: Uuid, slot: DateTime<Utc>) {
        let run = flexcore_contracts::ids::scheduled_run_id(schedule, slot);
        self.wait_event(run, "run.requested").await;
    }

    /// Waits until the aggregate has `n` events of `event_type`; returns them.
    pub async fn wait_events(&self, aggregate: Uuid, event_type: &str, n: usize) -> Vec<(Value, DateTime<Utc>)> {
        let waited = flexcore_testkit::wait_until(Duration::from_secs(20), event_type, || async {
            self.events(aggregate, event_type).await.len() >= n
        })
        .await;
        if let Err(e) = waited {
            let history: Vec<String> = sqlx::query_scalar(
                "SELECT event_type || ' ' || data::text FROM events WHERE aggregate_id = $1 ORDER BY version",
            )
            .bind(aggregate)
            .fetch_all(&self.db.pool)
            .await
            .unwrap_or_default();
            panic!("{e} (clock {}); the aggregate's events: {history:#?}", self.clock.now());
        }
        self.events(aggregate, event_type).await
    }

    pub async fn wait_event(&self, aggregate: Uuid, event_type: &str) -> (Value, DateTime<Utc>) {
        self.wait_events(aggregate, event_type, 1).await.remove(0)
    }

    /// Waits until the relay has published every event in the store to the events stream
    /// (what a replica starting now reads before it goes live).
    pub async fn relayed(&self) {
        let js = async_nats::jetstream::new(self.client.clone());
        flexcore_testkit::wait_until(Duration::from_secs(20), "every event relayed", || async {
            let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
            let Ok(mut stream) = js.get_stream(flexcore_contracts::subjects::EVENTS_STREAM).await else {
                return false;
            };
            stream
                .info()
                .await
                .is_ok_and(|info| info.state.messages == u64::try_from(stored).unwrap_or(0))
        })
        .await
        .unwrap();
    }

    /// Lets replicas react to whatever they were going to react to (for "nothing happens"
    /// assertions).
    pub async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(400)).await;
    }

    pub fn stop(self) {
        self.shutdown.cancel();
    }
}
