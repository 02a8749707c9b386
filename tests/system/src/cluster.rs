//! The four service binaries over a private PostgreSQL server and a private nats-server,
//! for fault tests: any service can be killed (SIGKILL) and started again, NATS stopped or
//! killed and started again, Postgres killed (no shutdown checkpoint) and started again,
//! all while a test drives load through its own NATS connection.
//!
//! Nothing here is shared with other tests: the servers listen on random ports and keep
//! their data in temporary directories, and only processes started here are signalled.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flexcore_testkit::{TestNats, TestPostgres};
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::procs::ServiceProcess;

/// One of the four services, as a binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// `flexcore-command` (and its relay).
    Command,
    /// `flexcore-projection`.
    Projection,
    /// `flexcore-scheduler`.
    Scheduler,
    /// `flexcore-runner`.
    Runner,
}

impl Service {
    /// Every service, in start order (the command service creates the streams).
    pub const ALL: [Service; 4] = [
        Service::Command,
        Service::Projection,
        Service::Scheduler,
        Service::Runner,
    ];

    /// The binary's name.
    pub fn binary(self) -> &'static str {
        crate::procs::SERVICES[self as usize].0
    }

    /// The line the binary logs once it serves.
    pub fn ready_line(self) -> &'static str {
        crate::procs::SERVICES[self as usize].1
    }

    /// Its identity among the test server's.
    pub fn identity(self) -> &'static str {
        crate::procs::identity_of(self.binary())
    }
}

/// A fault injected into a running [`Cluster`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// SIGKILL of a service, then a start of the same binary with the same settings.
    Kill(Service),
    /// nats-server stopped gracefully (SIGTERM: JetStream flushes) and started again.
    NatsRestart,
    /// nats-server killed (SIGKILL: nothing flushed) and started again.
    NatsKill,
    /// Postgres killed (`pg_ctl stop -m immediate`: no shutdown checkpoint, crash
    /// recovery on start) and started again.
    PostgresKill,
}

impl Fault {
    /// Every fault, in the order a round injects them.
    pub const ALL: [Fault; 7] = [
        Fault::Kill(Service::Command),
        Fault::Kill(Service::Projection),
        Fault::Kill(Service::Scheduler),
        Fault::Kill(Service::Runner),
        Fault::NatsRestart,
        Fault::NatsKill,
        Fault::PostgresKill,
    ];

    /// A short name for reports (`kill -9 flexcore-runner`, `nats-server kill -9`, …).
    pub fn name(self) -> String {
        match self {
            Fault::Kill(service) => format!("kill -9 {}", service.binary()),
            Fault::NatsRestart => "nats-server restart".to_owned(),
            Fault::NatsKill => "nats-server kill -9".to_owned(),
            Fault::PostgresKill => "postgres kill (immediate)".to_owned(),
        }
    }
}

/// When an injected fault ended.
#[derive(Debug, Clone, Copy)]
pub struct Injected {
    /// The fault.
    pub fault: Fault,
    /// The moment the killed process was started again (a server: accepted connections
    /// again). Recovery times are measured from here.
    pub ended: Instant,
    /// For a service: how long after `ended` it logged its ready line.
    pub ready_after: Option<Duration>,
}

/// The services as binaries over a private Postgres and nats-server.
pub struct Cluster {
    /// The private Postgres server (database `postgres` holds the event store).
    pub pg: TestPostgres,
    /// The private nats-server.
    pub nats: TestNats,
    /// A pool on the event store, for the test's own reads.
    pub db: PgPool,
    /// The test's own NATS connection (it reconnects after a NATS restart).
    pub client: async_nats::Client,
    /// JetStream on it.
    pub js: async_nats::jetstream::Context,
    /// Where the services' logs are written.
    pub logs: PathBuf,
    env: Vec<(String, String)>,
    running: Vec<(Service, ServiceProcess)>,
    _logs_dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts the servers and the four services, each configured by environment variables
    /// (`FLEXCORE__…`): the servers' URLs, then `settings` (which win). Logs go to `logs`,
    /// or to a temporary directory when `None`. Returns once every service logged its
    /// ready line.
    pub async fn start(settings: &[(&str, String)], logs: Option<&Path>) -> Self {
        let pg = TestPostgres::start().await.unwrap();
        let nats = TestNats::start().await.unwrap();
        let (logs, logs_dir) = match logs {
            Some(dir) => {
                std::fs::create_dir_all(dir).unwrap();
                (dir.to_path_buf(), None)
            }
            None => {
                let dir = tempfile::Builder::new().prefix("flexcore-chaos-").tempdir().unwrap();
                (dir.path().to_path_buf(), Some(dir))
            }
        };
        let mut env = vec![
            ("FLEXCORE__DATABASE__URL".to_owned(), pg.url()),
            ("FLEXCORE__NATS__URL".to_owned(), nats.url.clone()),
        ];
        env.extend(settings.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let client = nats.client().await.unwrap();
        let js = async_nats::jetstream::new(client.clone());
        let db = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_lazy(&pg.url())
            .unwrap();
        let mut cluster = Self {
            pg,
            nats,
            db,
            client,
            js,
            logs,
            env,
            running: Vec::new(),
            _logs_dir: logs_dir,
        };
        for service in Service::ALL {
            cluster.spawn(service);
            cluster.wait_ready(service, Duration::from_secs(120)).await;
        }
        cluster
    }

    /// Starts `service` (again), without waiting for it to be ready.
    pub fn spawn(&mut self, service: Service) {
        let own = self.nats.env_for(service.identity());
        let env: Vec<(&str, String)> = self
            .env
            .iter()
            .chain(&own)
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let process = ServiceProcess::start(service.binary(), &env, &self.logs);
        self.running.retain(|(s, _)| *s != service);
        self.running.push((service, process));
    }

    fn process(&mut self, service: Service) -> &mut ServiceProcess {
        self.running
            .iter_mut()
            .find(|(s, _)| *s == service)
            .map(|(_, p)| p)
            .unwrap_or_else(|| panic!("{} is not running", service.binary()))
    }

    /// Waits (at most `within`) until the current process of `service` logged its ready
    /// line; fails the test if it exits or the time runs out.
    pub async fn wait_ready(&mut self, service: Service, within: Duration) {
        self.process(service).wait_logged(service.ready_line(), within).await;
    }

    /// Injects `fault`: the process or server is gone for `downtime`, then started again.
    /// A restarted service is waited for (at most 120 s) until it logged its ready line.
    pub async fn inject(&mut self, fault: Fault, downtime: Duration) -> Injected {
        // The downtime is the fault itself (how long the component stays away), not a
        // wait for something to happen.
        match fault {
            Fault::Kill(service) => {
                self.process(service).kill9();
                tokio::time::sleep(downtime).await;
                self.spawn(service);
                let ended = Instant::now();
                self.wait_ready(service, Duration::from_secs(120)).await;
                Injected {
                    fault,
                    ended,
                    ready_after: Some(ended.elapsed()),
                }
            }
            Fault::NatsRestart | Fault::NatsKill => {
                if fault == Fault::NatsKill {
                    self.nats.kill();
                } else {
                    self.nats.stop();
                }
                tokio::time::sleep(downtime).await;
                self.nats.restart().await.unwrap();
                Injected {
                    fault,
                    ended: Instant::now(),
                    ready_after: None,
                }
            }
            Fault::PostgresKill => {
                self.pg.kill().await.unwrap();
                tokio::time::sleep(downtime).await;
                self.pg.start_again().await.unwrap();
                Injected {
                    fault,
                    ended: Instant::now(),
                    ready_after: None,
                }
            }
        }
    }

    /// The services whose process exited (none should on its own).
    pub fn exited(&mut self) -> Vec<Service> {
        self.running
            .iter_mut()
            .filter_map(|(s, p)| (!p.is_running()).then_some(*s))
            .collect()
    }

    /// The last `lines` lines of every service's current log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for (service, process) in &self.running {
            let text = process.log_text();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "--- {} ({}) ---\n{}\n",
                service.binary(),
                process.log.display(),
                all[all.len().saturating_sub(lines)..].join("\n")
            ));
        }
        out
    }

    /// Stops every service with SIGTERM and waits (at most `within` each) for it to exit.
    pub async fn stop(mut self, within: Duration) {
        for (_, process) in self.running.iter().rev() {
            process.terminate();
        }
        for (_, process) in self.running.iter_mut().rev() {
            let _ = process.exited_within(within).await;
        }
    }
}
