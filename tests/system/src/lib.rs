//! FlexCore end to end, for tests: the real services over a private nats-server and a
//! fresh Postgres database, started in this process ([`Stack`]) or as their binaries
//! ([`procs`]), so a test can stop, restart or kill any of them.
//!
//! # Layout
//! - this file: [`Stack`], the services in-process, and request helpers that never give up
//!   silently (a request without a reply is a test failure).
//! - [`procs`]: the service binaries as child processes.
//! - [`plugins`]: the example wasm plugins, built once per test process.
//! - [`cluster`]: the service binaries over a private Postgres server and nats-server,
//!   with faults to inject (kill -9 of a service, NATS and Postgres restarts).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cluster;
pub mod plugins;
pub mod procs;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flexcore_config::{Secret, Settings};
use flexcore_runner::worker::{RunnerConfig, SecretSource};
use flexcore_testkit::{TestDb, TestNats};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Which services a [`Stack`] runs besides the command service.
#[derive(Debug, Clone)]
pub struct Options {
    /// The projection service (queries).
    pub projection: bool,
    /// A runner.
    pub runner: bool,
    /// A scheduler replica.
    pub scheduler: bool,
    /// The runner's lease.
    pub lease: Duration,
    /// The NATS server's `max_payload` (e.g. `"64KB"`), when not the default 1 MB.
    pub max_payload: Option<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            projection: true,
            runner: false,
            scheduler: false,
            lease: Duration::from_secs(30),
            max_payload: None,
        }
    }
}

/// One service running in this process, stoppable on its own.
struct Service {
    name: &'static str,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Service {
    fn spawn<F>(name: &'static str, stop: CancellationToken, run: F) -> Self
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let task = tokio::spawn(async move {
            if let Err(error) = run.await {
                tracing::error!(
                    service = name,
                    error = format!("{error:#}"),
                    "service stopped with an error"
                );
            }
        });
        Self { name, stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.task).await;
    }
}

/// The services over a private NATS and a fresh database.
pub struct Stack {
    /// The database (also read directly by tests).
    pub db: TestDb,
    /// The private nats-server.
    pub nats: TestNats,
    /// A client of the tests' own.
    pub client: async_nats::Client,
    /// JetStream on it.
    pub js: async_nats::jetstream::Context,
    /// The services' settings.
    pub settings: Settings,
    /// The runner's output directory (granted to the jsonl loader as `/out`).
    pub output: tempfile::TempDir,
    options: Options,
    command: Option<Service>,
    others: Vec<Service>,
}

impl Stack {
    /// Starts the command service and the services `options` name; returns once the
    /// command service answers and (with a projection) queries are answered.
    pub async fn start(options: Options) -> Self {
        flexcore_testkit::init_tracing();
        let db = TestDb::create().await.unwrap();
        let mut nats = TestNats::start().await.unwrap();
        if let Some(max_payload) = options.max_payload {
            nats.set_max_payload(max_payload);
            nats.restart().await.unwrap();
        }
        let client = nats.client().await.unwrap();
        let js = async_nats::jetstream::new(client.clone());
        let mut settings = Settings::default();
        settings.database.url = Secret::new(db.url.clone());
        nats.settings_for("command", &mut settings);
        settings.relay.idle_poll = Duration::from_millis(50);
        settings.relay.leader_retry = Duration::from_millis(100);
        settings.projection.leader_retry = Duration::from_millis(100);
        let mut stack = Self {
            db,
            nats,
            client,
            js,
            settings,
            output: tempfile::tempdir().unwrap(),
            options: options.clone(),
            command: None,
            others: Vec::new(),
        };
        stack.start_command().await;
        if options.projection {
            let mut settings = stack.settings.clone();
            stack.nats.settings_for("projection", &mut settings);
            let (pool, nats) = flexcore_projection::connect(&settings).await.unwrap();
            let stop = CancellationToken::new();
            let token = stop.clone();
            stack.others.push(Service::spawn("projection", stop, async move {
                flexcore_projection::run(&settings, nats, pool, token).await
            }));
            let probe = stack.client.clone();
            flexcore_testkit::wait_until(Duration::from_secs(30), "queries answered", || async {
                let request = probe.request("flexcore.qry.stats.get", "{}".into());
                matches!(
                    tokio::time::timeout(Duration::from_millis(500), request).await,
                    Ok(Ok(_))
                )
            })
            .await
            .unwrap();
        }
        if options.runner {
            // Process plugins run as the test's own user: the tests' taps write into the
            // tests' private directories. The drop to nobody is covered by the runner's
            // hostile suite (services/plugin-runner/tests/hostile).
            let sandbox_config = flexcore_runner::sandbox::SandboxConfig {
                process: flexcore_runner::sandbox::ProcessIsolation {
                    run_as: None,
                    ..Default::default()
                },
                ..Default::default()
            };
            let sandbox = Arc::new(flexcore_runner::sandbox::Sandbox::new(sandbox_config).unwrap());
            let config = RunnerConfig {
                runner_id: format!("test-runner-{}", Uuid::new_v4().simple()),
                slots: 4,
                lease: options.lease,
                max_deliver: 10,
                secrets: SecretSource::Env {
                    prefix: "FLEXCORE_TEST_SECRET_".into(),
                },
                plugin_env_allow: Default::default(),
                shutdown_grace: Duration::from_secs(10),
            };
            let nats = stack.nats.client_as("runner").await.unwrap();
            let credentials = stack.nats.credentials("runner").unwrap();
            let stop = CancellationToken::new();
            let token = stop.clone();
            stack.others.push(Service::spawn("runner", stop, async move {
                flexcore_runner::worker::run(nats, sandbox, config, credentials, token).await
            }));
        }
        if options.scheduler {
            let settings = stack.settings.scheduler.clone();
            let timeout = stack.settings.nats.request_timeout;
            let nats = stack.nats.client_as("scheduler").await.unwrap();
            let credentials = stack.nats.credentials("scheduler").unwrap();
            let stop = CancellationToken::new();
            let token = stop.clone();
            stack.others.push(Service::spawn("scheduler", stop, async move {
                flexcore_scheduler::run(
                    &settings,
                    nats,
                    credentials,
                    timeout,
                    flexcore_scheduler::Clock::System,
                    token,
                )
                .await
            }));
        }
        stack
    }

    /// Starts the command service (again), waiting until it answers.
    pub async fn start_command(&mut self) {
        assert!(self.command.is_none(), "the command service runs already");
        let settings = self.settings.clone();
        let (pool, nats) = flexcore_command::connect(&settings).await.unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        self.command = Some(Service::spawn("command", stop, async move {
            flexcore_command::run(&settings, nats, pool, token).await
        }));
        flexcore_testkit::nats::commands_answered(&self.client).await.unwrap();
    }

    /// Stops the command service (its relay too) and waits until it has.
    pub async fn stop_command(&mut self) {
        if let Some(command) = self.command.take() {
            command.stop().await;
        }
    }

    /// Tells the runner to stop (as SIGTERM does) without waiting for it: it drains for
    /// its shutdown grace (10 s) while the test goes on.
    pub fn signal_runner_stop(&self) {
        for service in self.others.iter().filter(|s| s.name == "runner") {
            service.stop.cancel();
        }
    }

    /// Stops every service.
    pub async fn stop(mut self) {
        for service in self.others.drain(..).rev() {
            service.stop().await;
        }
        self.stop_command().await;
    }

    /// What the stack runs.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// A typed client on the tests' connection, signing as the harness (role admin).
    pub fn api(&self) -> flexcore_client::Client {
        flexcore_client::Client::new(self.client.clone()).with_identity(self.harness())
    }

    /// The test harness's identity (role admin; its NATS connection is unrestricted).
    pub fn harness(&self) -> flexcore_security::Identity {
        self.nats.identity(flexcore_testkit::nats::HARNESS).unwrap()
    }

    /// Sends `body` to `subject` and returns the reply, parsed; a request nobody answers
    /// within 10 s fails the test (silence is a bug). Commands are signed as
    /// [`flexcore_testkit::nats::signer_for`] says: the runners' as a runner, the
    /// schedulers' (and `run.request`) as a scheduler, the rest as the harness (admin).
    pub async fn request(&self, subject: &str, body: impl Into<Bytes>) -> Value {
        let body = body.into();
        let mut headers = async_nats::HeaderMap::new();
        if subject.starts_with("flexcore.cmd.") {
            flexcore_testkit::nats::signer_for(subject)
                .unwrap()
                .sign(subject, &mut headers, &body);
        }
        let request = async_nats::Request::new()
            .payload(body)
            .headers(headers)
            .timeout(Some(Duration::from_secs(10)));
        let reply = self
            .client
            .send_request(subject.to_owned(), request)
            .await
            .unwrap_or_else(|e| panic!("{subject}: no reply ({e})"));
        serde_json::from_slice(&reply.payload)
            .unwrap_or_else(|e| panic!("{subject}: the reply is not JSON ({e}): {:?}", reply.payload))
    }

    /// Command `name` (`pipeline.create`) with `body`; the reply.
    pub async fn command(&self, name: &str, body: Value) -> Value {
        let (aggregate, action) = name.split_once('.').unwrap();
        let subject = flexcore_contracts::subjects::command(aggregate, action);
        self.request(&subject, serde_json::to_vec(&body).unwrap()).await
    }

    /// Command `name`, which must be accepted; the reply.
    pub async fn ok(&self, name: &str, body: Value) -> Value {
        let reply = self.command(name, body.clone()).await;
        assert_eq!(reply["ok"], json!(true), "{name} {body} -> {reply}");
        reply
    }

    /// Query `name` (`run.get`) with `body`; the reply.
    pub async fn query(&self, name: &str, body: Value) -> Value {
        let (view, operation) = name.split_once('.').unwrap();
        let subject = flexcore_contracts::subjects::query(view, operation);
        self.request(&subject, serde_json::to_vec(&body).unwrap()).await
    }

    /// Uploads the example plugin `package` and registers it as `name@1.0.0` of `kind`
    /// with `extra` fields (grants, limits, config schema); returns `name@1.0.0`.
    pub async fn register(&self, package: &str, name: &str, kind: &str, extra: Value) -> String {
        let digest = flexcore_plugin_store::upload(&self.js, &plugins::wasm(package))
            .await
            .unwrap();
        let mut body = json!({"name": name, "version": "1.0.0", "kind": kind, "module_digest": digest});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        self.ok("plugin.register", body).await;
        format!("{name}@1.0.0")
    }

    /// Waits until run `run_id` has an event of `event_type`; its data.
    pub async fn wait_run_event(&self, run_id: &str, event_type: &str, within: Duration) -> Value {
        let found = || async {
            sqlx::query_scalar::<_, Value>(
                "SELECT data FROM events WHERE aggregate_id = $1::uuid AND event_type = $2 ORDER BY version LIMIT 1",
            )
            .bind(run_id)
            .bind(event_type)
            .fetch_optional(&self.db.pool)
            .await
            .unwrap()
        };
        let waited = flexcore_testkit::wait_until(within, event_type, || async { found().await.is_some() }).await;
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
        found().await.unwrap()
    }

    /// Every event type of aggregate `id`, in order.
    pub async fn event_types(&self, id: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT event_type FROM events WHERE aggregate_id = $1::uuid ORDER BY version")
            .bind(id)
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }
}

/// Appends `event` to the event store directly, as command `command_type` would have:
/// committed, but published only once a relay runs (what a stopped command service
/// leaves behind).
pub async fn append_directly(pool: &sqlx::PgPool, command_type: &str, event: flexcore_eventstore::NewEvent) {
    flexcore_eventstore::EventStore::new(pool.clone(), Default::default())
        .append(flexcore_eventstore::AppendRequest {
            command_id: None,
            command_type: command_type.into(),
            payload_hash: String::new(),
            events: vec![event],
            claims: Vec::new(),
            releases: Vec::new(),
            slot_acquire: None,
            slot_release: None,
            reply: None,
            checks: Vec::new(),
        })
        .await
        .unwrap();
}
