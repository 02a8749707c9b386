//! Runner service end to end: the real command service and runner wired over a private
//! NATS, a fresh Postgres database, and wasm plugins built from `plugins/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod floods;
mod lifecycle;
mod metrics;
mod process_and_secrets;
mod python_example;
mod retries;
mod secret_leaks;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use flexcore_config::Settings;
use flexcore_contracts::model::{DirAccess, DirGrant, Grants};
use flexcore_runner::worker::{RunnerConfig, SecretSource};
use flexcore_testkit::{TestDb, TestNats};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds every example plugin for wasm32-wasip1 once per test process and returns the
/// module bytes of `package`.
pub fn wasm(package: &str) -> Vec<u8> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| {
            // The same target dir as `plugins/build.sh` and cargo itself, so CI builds once.
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace().join("target"));
            let mut cmd = std::process::Command::new(env!("CARGO"));
            cmd.current_dir(workspace()).env("CARGO_TARGET_DIR", &target).args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip1",
            ]);
            for p in PLUGINS {
                cmd.args(["-p", p]);
            }
            let out = cmd.output().map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            Ok(target.join("wasm32-wasip1/release"))
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("building the wasm plugins failed (is wasm32-wasip1 installed?): {e}"));
    std::fs::read(dir.join(format!("{package}.wasm"))).unwrap_or_else(|e| panic!("{package}.wasm: {e}"))
}

const PLUGINS: &[&str] = &[
    "flexcore-plugin-csv",
    "flexcore-plugin-mapper",
    "flexcore-plugin-jsonl",
    "flexcore-plugin-generator",
    "flexcore-plugin-discard",
    "flexcore-plugin-misbehave",
    "flexcore-plugin-leaky",
];

pub struct Stack {
    pub db: TestDb,
    pub nats: TestNats,
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub shutdown: CancellationToken,
    pub runner_stop: CancellationToken,
}

pub fn settings(db: &TestDb, nats: &TestNats) -> Settings {
    let mut s = Settings::default();
    s.database.url = flexcore_config::Secret::new(db.url.clone());
    nats.settings_for("command", &mut s);
    s.relay.idle_poll = Duration::from_millis(50);
    s.relay.leader_retry = Duration::from_millis(100);
    s
}

pub fn runner_config(lease: Duration, secrets: SecretSource) -> RunnerConfig {
    RunnerConfig {
        runner_id: format!("test-runner-{}", Uuid::new_v4().simple()),
        slots: 4,
        lease,
        max_deliver: 10,
        secrets,
        plugin_env_allow: Default::default(),
        shutdown_grace: Duration::from_secs(10),
    }
}

/// Command service plus (unless `runner` is None) an in-process runner.
pub async fn stack(runner: Option<RunnerConfig>) -> Stack {
    flexcore_testkit::init_tracing();
    let db = TestDb::create().await.unwrap();
    let nats = TestNats::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let shutdown = CancellationToken::new();
    let settings = settings(&db, &nats);
    let (pool, service_client) = flexcore_command::connect(&settings).await.unwrap();
    let token = shutdown.clone();
    tokio::spawn(async move { flexcore_command::run(&settings, service_client, pool, token).await });
    flexcore_testkit::nats::commands_answered(&client).await.unwrap();
    let runner_stop = shutdown.child_token();
    if let Some(config) = runner {
        // Process plugins run as the test's own user: the venv scripts/test.sh makes may
        // link to an interpreter under root's home (pyenv), which nobody cannot reach.
        // The drop to nobody is covered by the hostile suite (tests/hostile).
        let sandbox_config = flexcore_runner::sandbox::SandboxConfig {
            process: flexcore_runner::sandbox::ProcessIsolation {
                run_as: None,
                ..Default::default()
            },
            ..Default::default()
        };
        let sandbox = Arc::new(flexcore_runner::sandbox::Sandbox::new(sandbox_config).unwrap());
        let (c, stop) = (nats.client_as("runner").await.unwrap(), runner_stop.clone());
        let credentials = nats.credentials("runner").unwrap();
        tokio::spawn(async move {
            if let Err(error) = flexcore_runner::worker::run(c, sandbox, config, credentials, stop).await {
                tracing::error!(error = format!("{error:#}"), "the test runner stopped");
            }
        });
    }
    Stack {
        db,
        nats,
        client,
        js,
        shutdown,
        runner_stop,
    }
}

impl Stack {
    /// Starts a scheduler (the one that retries failed attempts) on this stack, stopped
    /// with it.
    pub async fn spawn_scheduler(&self) {
        let scheduler = flexcore_config::SchedulerSettings::default();
        let (client, stop) = (self.nats.client_as("scheduler").await.unwrap(), self.shutdown.clone());
        let credentials = self.nats.credentials("scheduler").unwrap();
        tokio::spawn(async move {
            flexcore_scheduler::run(
                &scheduler,
                client,
                credentials,
                Duration::from_secs(5),
                flexcore_scheduler::Clock::System,
                stop,
            )
            .await
        });
    }

    pub async fn send(&self, command: &str, body: Value) -> Value {
        let (a, c) = command.split_once('.').unwrap();
        let reply = self
            .nats
            .signed_request(
                &self.client,
                &format!("flexcore.cmd.{a}.{c}"),
                serde_json::to_vec(&body).unwrap(),
            )
            .await
            .unwrap();
        serde_json::from_slice(&reply.payload).unwrap()
    }

    pub async fn ok(&self, command: &str, body: Value) -> Value {
        let reply = self.send(command, body.clone()).await;
        assert_eq!(reply["ok"], json!(true), "{command} {body} -> {reply}");
        reply
    }

    /// Creates a pipeline and returns its id.
    pub async fn pipeline(&self, body: Value) -> String {
        self.ok("pipeline.create", body).await["aggregate_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Uploads a plugin module and registers it.
    pub async fn register(&self, package: &str, name: &str, kind: &str, grants: Grants, limits: Value) -> String {
        let digest = flexcore_plugin_store::upload(&self.js, &wasm(package)).await.unwrap();
        self.ok(
            "plugin.register",
            json!({"name": name, "version": "1.0.0", "kind": kind, "module_digest": digest, "grants": grants, "limits": limits}),
        )
        .await;
        format!("{name}@1.0.0")
    }

    /// Uploads and registers a plugin without grants or limits.
    pub async fn register_plain(&self, package: &str, name: &str, kind: &str) -> String {
        self.register(package, name, kind, Grants::default(), json!({})).await
    }

    /// The data of the run's events of `event_type`, in order.
    pub async fn run_events(&self, run_id: &str, event_type: &str) -> Vec<Value> {
        sqlx::query_scalar("SELECT data FROM events WHERE aggregate_id = $1::uuid AND event_type = $2 ORDER BY version")
            .bind(run_id)
            .bind(event_type)
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }

    /// Waits for the run's first event of `event_type`.
    pub async fn wait_event(&self, run_id: &str, event_type: &str, timeout: Duration) -> Value {
        let waited = flexcore_testkit::wait_until(timeout, event_type, || async {
            !self.run_events(run_id, event_type).await.is_empty()
        })
        .await;
        if let Err(e) = waited {
            let history: Vec<String> = sqlx::query_scalar(
                "SELECT event_type || ' ' || data::text FROM events WHERE aggregate_id = $1::uuid ORDER BY version",
            )
            .bind(run_id)
            .fetch_all(&self.db.pool)
            .await
            .unwrap_or_default();
            panic!("{e}; the run's events: {history:#?}");
        }
        self.run_events(run_id, event_type).await.remove(0)
    }
}

pub fn dir_grant(host: &Path, guest: &str, access: DirAccess) -> Grants {
    Grants {
        dirs: vec![DirGrant {
            host_path: host.display().to_string(),
            guest_path: guest.into(),
            access,
        }],
        ..Default::default()
    }
}
