//! Projection-service integration tests: real Postgres, a private real NATS JetStream
//! server per test, the real command service producing events, queries sent as raw JSON
//! like any language would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod bad_input;
mod consistency;
mod crash;
mod queries;
mod rebuild;
mod separate;

use std::path::{Path, PathBuf};
use std::time::Duration;

use flexcore_config::Settings;
use flexcore_testkit::{TestDb, TestNats};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub struct Stack {
    /// The event store (and, unless `read_db`, the read models).
    pub db: TestDb,
    /// The read models' own database, when the stack has the separate layout.
    pub read_db: Option<TestDb>,
    /// The projection service's settings on top of `settings`: its database URLs.
    projection_urls: Option<(String, String)>,
    pub nats: TestNats,
    pub client: async_nats::Client,
    pub settings: Settings,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

pub fn settings(db: &TestDb, nats: &TestNats) -> Settings {
    let mut s = Settings::default();
    s.database.url = flexcore_config::Secret::new(db.url.clone());
    nats.settings_for("command", &mut s);
    s.relay.idle_poll = Duration::from_millis(50);
    s.relay.leader_retry = Duration::from_millis(100);
    s.projection.leader_retry = Duration::from_millis(100);
    // Two services per test and tests in parallel share the local Postgres's 100 connections.
    s.database.max_connections = 8;
    s.projection.min_position_timeout = Duration::from_millis(3000);
    s
}

/// The entry of projection `name` in a `projection.list`.
pub fn projection<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == json!(name))
        .unwrap()
}

/// Where the read models live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// In the event store's database (the default).
    Shared,
    /// In a database of their own; the projection service reads the event store as a
    /// role that may only `SELECT` from `events`.
    Separate,
}

/// The command service and, when `projection`, the projection service, in-process.
pub async fn stack(projection: bool) -> Stack {
    stack_in(Layout::Shared, projection).await
}

/// [`stack`] with the read models laid out as `layout` says.
pub async fn stack_in(layout: Layout, projection: bool) -> Stack {
    flexcore_testkit::init_tracing();
    let db = TestDb::create().await.unwrap();
    let nats = TestNats::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let settings = settings(&db, &nats);
    let (read_db, projection_urls) = match layout {
        Layout::Shared => (None, None),
        Layout::Separate => {
            let read_db = TestDb::create_empty().await.unwrap();
            let urls = (db.reader().await.unwrap(), read_db.url.clone());
            (Some(read_db), Some(urls))
        }
    };
    let mut stack = Stack {
        read_db,
        projection_urls,
        db,
        nats,
        client,
        settings,
        shutdown: CancellationToken::new(),
        tasks: Vec::new(),
    };
    let s = stack.settings.clone();
    let token = stack.shutdown.clone();
    let (pool, nats) = flexcore_command::connect(&s).await.unwrap();
    stack.tasks.push(tokio::spawn(async move {
        flexcore_command::run(&s, nats, pool, token).await
    }));
    stack.wait_answers("flexcore.cmd.plugin.enable").await;
    if projection {
        stack.spawn_projection().await;
    }
    stack
}

impl Stack {
    /// Requests a rebuild of each of `names` and waits until all are done; the
    /// projection list then.
    pub async fn rebuild(&self, names: &[&str]) -> Value {
        for name in names {
            let status = self.data("projection.rebuild", json!({"name": name})).await;
            assert_eq!(status["state"], json!("requested"));
        }
        self.rebuilt(names).await
    }

    /// Waits until the rebuilds of each of `names` (requested by anyone) are done; the
    /// projection list then.
    pub async fn rebuilt(&self, names: &[&str]) -> Value {
        flexcore_testkit::wait_until(Duration::from_secs(60), "rebuilds done", || async {
            let list = self.data("projection.list", json!({})).await;
            names
                .iter()
                .all(|n| projection(&list, n)["rebuild"]["state"] == json!("done"))
        })
        .await
        .unwrap();
        self.data("projection.list", json!({})).await
    }

    /// The read models' database.
    pub fn read_pool(&self) -> &sqlx::PgPool {
        &self.read_db.as_ref().unwrap_or(&self.db).pool
    }

    /// The projection service's settings.
    pub fn projection_settings(&self) -> Settings {
        let mut s = self.settings.clone();
        self.nats.settings_for("projection", &mut s);
        if let Some((log, read)) = &self.projection_urls {
            s.database.url = flexcore_config::Secret::new(log.clone());
            s.projection.database_url = flexcore_config::Secret::new(read.clone());
        }
        s
    }

    pub async fn spawn_projection(&mut self) {
        let s = self.projection_settings();
        let token = self.shutdown.clone();
        let (pool, nats) = flexcore_projection::connect(&s).await.unwrap();
        self.tasks.push(tokio::spawn(async move {
            flexcore_projection::run(&s, nats, pool, token).await
        }));
        self.wait_answers("flexcore.qry.projection.list").await;
    }

    /// The projection service as a child process (so it can be killed with SIGKILL).
    pub fn spawn_projection_process(&self) -> std::process::Child {
        std::process::Command::new(env!("CARGO_BIN_EXE_flexcore-projection"))
            .env("FLEXCORE__DATABASE__URL", &self.db.url)
            .envs(self.projection_urls.iter().flat_map(|(log, read)| {
                [
                    ("FLEXCORE__DATABASE__URL", log),
                    ("FLEXCORE__PROJECTION__DATABASE_URL", read),
                ]
            }))
            .envs(self.nats.env_for("projection"))
            .env("FLEXCORE__PROJECTION__LEADER_RETRY_MS", "100")
            .env("FLEXCORE__DATABASE__MAX_CONNECTIONS", "8")
            .env("FLEXCORE__TELEMETRY__LOG_FORMAT", "text")
            .env("FLEXCORE_CONFIG_DIR", workspace().join("config"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    async fn wait_answers(&self, subject: &str) {
        flexcore_testkit::wait_until(Duration::from_secs(30), subject, || async {
            matches!(
                tokio::time::timeout(
                    Duration::from_millis(500),
                    self.client.request(subject.to_owned(), "{}".into())
                )
                .await,
                Ok(Ok(_))
            )
        })
        .await
        .unwrap();
    }

    pub async fn request(&self, subject: &str, body: impl Into<bytes::Bytes>) -> Value {
        let reply = tokio::time::timeout(
            Duration::from_secs(15),
            flexcore_testkit::nats::signed_request(&self.client, subject, body),
        )
        .await
        .expect("reply within 15 s")
        .expect("request");
        serde_json::from_slice(&reply.payload).unwrap()
    }

    /// Sends a command and asserts it was accepted.
    pub async fn ok(&self, command: &str, body: Value) -> Value {
        let reply = self
            .request(&format!("flexcore.cmd.{command}"), serde_json::to_vec(&body).unwrap())
            .await;
        assert_eq!(reply["ok"], json!(true), "{command} {body} -> {reply}");
        reply
    }

    /// Sends a query (`view.operation`) and returns the whole reply.
    pub async fn query(&self, query: &str, body: Value) -> Value {
        self.request(&format!("flexcore.qry.{query}"), serde_json::to_vec(&body).unwrap())
            .await
    }

    /// Sends a query and returns its `data`, asserting success.
    pub async fn data(&self, query: &str, body: Value) -> Value {
        let reply = self.query(query, body.clone()).await;
        assert_eq!(reply["ok"], json!(true), "{query} {body} -> {reply}");
        reply["data"].clone()
    }

    /// Waits until every projection has applied every committed event.
    pub async fn caught_up(&self) {
        flexcore_testkit::wait_until(Duration::from_secs(60), "projections caught up", || async {
            // Tolerates a service that is still starting (no responders yet).
            let Ok(Ok(reply)) = tokio::time::timeout(
                Duration::from_secs(5),
                self.client.request("flexcore.qry.projection.list", "{}".into()),
            )
            .await
            else {
                return false;
            };
            let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
            reply["ok"] == json!(true)
                && reply["data"]
                    .as_array()
                    .is_some_and(|all| all.len() == 5 && all.iter().all(|p| p["lag_events"] == json!(0)))
        })
        .await
        .unwrap();
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// An extractor and a loader to build pipelines from.
    pub async fn register_plugins(&self) {
        let digest = format!("sha256:{}", "ab".repeat(32));
        for (name, kind) in [("csv", "extractor"), ("jsonl", "loader")] {
            self.ok(
                "plugin.register",
                json!({"name": name, "version": "1.0.0", "kind": kind, "module_digest": digest}),
            )
            .await;
        }
    }

    pub async fn create_pipeline(&self, name: &str) -> (Uuid, u64) {
        let reply = self
            .ok(
                "pipeline.create",
                json!({"name": name, "owner": "data-team", "tags": ["nightly"], "steps": [
                    {"plugin": "csv@1.0.0"}, {"plugin": "jsonl@1.0.0"}]}),
            )
            .await;
        (
            reply["aggregate_id"].as_str().unwrap().parse().unwrap(),
            reply["global_position"].as_u64().unwrap(),
        )
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            task.await.unwrap().unwrap();
        }
    }
}

/// Commands across all four aggregates for pipeline number `i`: a plugin version, a
/// pipeline with updates, pauses and a committed bookmark, runs that succeed, fail,
/// retry or are cancelled, and a schedule with skipped and missed slots.
pub async fn workload(s: &Stack, tag: &str, i: usize) {
    let digest = format!("sha256:{}", "cd".repeat(32));
    let plugin = s
        .ok(
            "plugin.register",
            json!({"name": format!("x-{tag}"), "version": format!("1.0.{i}"), "kind": "transformer", "module_digest": digest}),
        )
        .await;
    if i.is_multiple_of(2) {
        s.ok(
            "plugin.deprecate",
            json!({"plugin_id": plugin["aggregate_id"], "reason": "old"}),
        )
        .await;
    }
    let (pipeline, _) = s.create_pipeline(&format!("p-{tag}-{i}")).await;
    let schedule = s
        .ok(
            "schedule.create",
            json!({"pipeline_id": pipeline, "cron": "*/5 * * * *", "timezone": "Europe/Berlin"}),
        )
        .await["aggregate_id"]
        .clone();
    let run = s.ok("run.request", json!({"pipeline_id": pipeline})).await["aggregate_id"].clone();
    s.ok(
        "run.claim",
        json!({"run_id": run, "attempt": 1, "runner_id": "r1", "lease_seconds": 30}),
    )
    .await;
    s.ok(
        "run.checkpoint",
        json!({"run_id": run, "attempt": 1, "state": {"bookmark": i}, "counters": {"users": 10}}),
    )
    .await;
    match i % 3 {
        0 => {
            s.ok(
                "run.fail",
                json!({"run_id": run, "attempt": 1, "retryable": false,
                "error": {"code": "io", "message": "disk full"}, "counters": {"users": 10}}),
            )
            .await;
        }
        1 => {
            s.ok(
                "run.fail",
                json!({"run_id": run, "attempt": 1, "retryable": true,
                "error": {"code": "net", "message": "reset"}, "counters": {"users": 10}}),
            )
            .await;
            s.ok("run.retry", json!({"run_id": run, "failed_attempt": 1})).await;
            s.ok(
                "run.claim",
                json!({"run_id": run, "attempt": 2, "runner_id": "r2", "lease_seconds": 30}),
            )
            .await;
            s.ok(
                "run.succeed",
                json!({"run_id": run, "attempt": 2, "counters": {"users": 25}}),
            )
            .await;
        }
        _ => {
            s.ok(
                "run.succeed",
                json!({"run_id": run, "attempt": 1, "counters": {"users": 20, "orders": 5}}),
            )
            .await;
        }
    }
    s.ok(
        "pipeline.update",
        json!({"pipeline_id": pipeline, "tags": ["nightly", format!("t{}", i % 4)]}),
    )
    .await;
    s.ok(
        "schedule.skip_slot",
        json!({"schedule_id": schedule, "slot": "2026-11-24T10:00:00Z", "reason": "overlap"}),
    )
    .await;
    s.ok(
        "schedule.miss_slots",
        json!({"schedule_id": schedule, "slots": ["2026-11-24T10:05:00Z", "2026-11-24T10:10:00Z"]}),
    )
    .await;
    if i % 2 == 1 {
        s.ok(
            "pipeline.pause",
            json!({"pipeline_id": pipeline, "reason": "maintenance"}),
        )
        .await;
        s.ok("schedule.pause", json!({"schedule_id": schedule})).await;
    } else {
        let second = s.ok("run.request", json!({"pipeline_id": pipeline})).await["aggregate_id"].clone();
        s.ok("run.cancel", json!({"run_id": second, "reason": "not needed"}))
            .await;
    }
}

/// Runs [`workload`] for `n` pipelines, `parallel` at a time.
pub async fn burst(s: &Stack, tag: &str, n: usize, parallel: usize) {
    use futures::StreamExt;
    futures::stream::iter(0..n)
        .for_each_concurrent(parallel, |i| workload(s, tag, i))
        .await;
}
