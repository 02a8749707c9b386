//! Command-service integration tests: real Postgres, a private real NATS JetStream
//! server per test, commands sent as raw JSON bytes like any language would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod bad_input;
mod concurrency;
mod db_outage;
mod dry_run;
mod lifecycle;
mod outage;

use std::sync::Arc;
use std::time::Duration;

use flexcore_config::Settings;
use flexcore_testkit::{TestDb, TestNats};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct App {
    /// Shared by replicas started with [`spawn_app_on`].
    pub db: Arc<TestDb>,
    pub nats: TestNats,
    pub client: async_nats::Client,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<anyhow::Result<()>>>,
}

pub fn settings(db: &TestDb, nats: &TestNats) -> Settings {
    let mut s = Settings::default();
    s.database.url = flexcore_config::Secret::new(db.url.clone());
    s.database.migrate_on_start = true;
    nats.settings_for("command", &mut s);
    s.relay.idle_poll = Duration::from_millis(50);
    s.relay.leader_retry = Duration::from_millis(100);
    s.command.shutdown_grace = Duration::from_millis(5_000);
    // Small, so a test can store a module over it.
    s.runner.max_module_bytes = 1 << 20;
    s
}

pub async fn spawn_app() -> App {
    spawn_app_on(Arc::new(TestDb::create().await.unwrap())).await
}

/// A command service on `db` with its own NATS server: another replica, which receives
/// only what the test sends it.
pub async fn spawn_app_on(db: Arc<TestDb>) -> App {
    flexcore_testkit::init_tracing();
    let nats = TestNats::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let shutdown = CancellationToken::new();
    let settings = settings(&db, &nats);
    let (pool, service_client) = flexcore_command::connect(&settings).await.unwrap();
    let token = shutdown.clone();
    let task = tokio::spawn(async move { flexcore_command::run(&settings, service_client, pool, token).await });
    let app = App {
        db,
        nats,
        client,
        shutdown,
        task: Some(task),
    };
    // Ready when it answers (a refusal is an answer).
    flexcore_testkit::nats::commands_answered(&app.client).await.unwrap();
    app
}

impl App {
    /// Sends raw bytes as a NATS request and parses the reply.
    pub async fn send_raw(&self, subject: &str, body: impl Into<bytes::Bytes>) -> Value {
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            flexcore_testkit::nats::signed_request(&self.client, subject, body),
        )
        .await
        .expect("reply within 10 s")
        .expect("request");
        serde_json::from_slice(&reply.payload).unwrap()
    }

    pub async fn send(&self, command: &str, body: Value) -> Value {
        self.send_raw(&format!("flexcore.cmd.{command}"), serde_json::to_vec(&body).unwrap())
            .await
    }

    pub async fn ok(&self, command: &str, body: Value) -> Value {
        let reply = self.send(command, body.clone()).await;
        assert_eq!(reply["ok"], json!(true), "{command} {body} -> {reply}");
        reply
    }

    /// Registers an extractor and a loader (the loader's config schema requires `path`
    /// and marks `password` as a secret) and returns their refs.
    pub async fn register_plugins(&self) -> (String, String) {
        let digest = format!("sha256:{}", "ab".repeat(32));
        self.ok(
            "plugin.register",
            json!({"name": "csv", "version": "1.0.0", "kind": "extractor", "module_digest": digest}),
        )
        .await;
        self.ok(
            "plugin.register",
            json!({
                "name": "jsonl", "version": "1.0.0", "kind": "loader", "module_digest": digest,
                "config_schema": {
                    "type": "object",
                    "properties": {"path": {"type": "string"}, "password": {"type": "string", "writeOnly": true}},
                    "required": ["path"]
                }
            }),
        )
        .await;
        ("csv@1.0.0".into(), "jsonl@1.0.0".into())
    }

    pub async fn create_pipeline(&self, name: &str) -> Uuid {
        let reply = self
            .ok(
                "pipeline.create",
                json!({"name": name, "owner": "data-team", "steps": [
                    {"plugin": "csv@1.0.0"},
                    {"plugin": "jsonl@1.0.0", "config": {"path": "/out", "password": "${secret:DB_PASSWORD}"}}
                ]}),
            )
            .await;
        reply["aggregate_id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}
