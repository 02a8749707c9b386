//! The four service binaries over a private PostgreSQL server and a private nats-server,
//! for fault tests: any service can be killed (SIGKILL) and started again, NATS stopped or
//! killed and started again, Postgres killed (no shutdown checkpoint) and started again,
//! all while a test drives load through its own NATS connection.
//!
//! A [`Layout`] says how many replicas of each service run and whether NATS is one server
//! or a JetStream cluster ([`TestNatsCluster`], three nodes from `deploy/nats`); replicas
//! are spread over the nodes (each connects to one and learns the others from it), and
//! the leaders among them (the relay, each projection) can be found from their logs.
//!
//! Nothing here is shared with other tests: the servers listen on random ports and keep
//! their data in temporary directories, and only processes started here are signalled.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flexcore_testkit::{TestNats, TestNatsCluster, TestPostgres};
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
    /// On a NATS cluster: kill -9 of the node that leads `FLEXCORE_EVENTS`, started again
    /// once another node leads the stream.
    NatsNodeKill,
    /// kill -9 of the command-service replica that leads the relay, started again once
    /// another replica leads it.
    KillRelayLeader,
    /// kill -9 of the projection replica that leads the most projections, started again
    /// once other replicas lead each of them.
    KillProjectionLeader,
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
            Fault::NatsNodeKill => "kill -9 the NATS node leading the events stream".to_owned(),
            Fault::KillRelayLeader => "kill -9 the relay leader".to_owned(),
            Fault::KillProjectionLeader => "kill -9 a projection leader".to_owned(),
        }
    }
}

/// When an injected fault ended.
#[derive(Debug, Clone)]
pub struct Injected {
    /// The fault.
    pub fault: Fault,
    /// The moment the killed process was started again (a server: accepted connections
    /// again). Recovery times are measured from here. For a fault that a standby covers
    /// (a leader's or a NATS node's death with others left), the moment of the kill:
    /// the system is meant to serve on without it.
    pub ended: Instant,
    /// For a service: how long after `ended` it logged its ready line.
    pub ready_after: Option<Duration>,
    /// Fail-over: what took over, and how long after the kill (e.g. `relay` → another
    /// replica logged that it leads the relay).
    pub failover: Vec<(String, Duration)>,
}

/// How many replicas of each service run, and how many NATS nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Replicas of each service, in [`Service::ALL`] order.
    pub replicas: [usize; 4],
    /// 1: one nats-server ([`TestNats`]); more: a JetStream cluster of that many nodes
    /// from `deploy/nats/nats-server.conf`, every stream with that many replicas (at most 3).
    pub nats_nodes: usize,
}

impl Layout {
    /// One of everything.
    pub const SINGLE: Layout = Layout {
        replicas: [1, 1, 1, 1],
        nats_nodes: 1,
    };

    /// A three-node NATS cluster, two command services (a relay leader and a standby),
    /// two projection services (leaders and standbys), three schedulers, two runners.
    pub const CLUSTER: Layout = Layout {
        replicas: [2, 2, 3, 2],
        nats_nodes: 3,
    };

    /// Replicas of `service`.
    pub fn of(&self, service: Service) -> usize {
        self.replicas[service as usize]
    }
}

/// The NATS of a [`Cluster`]: one server or a JetStream cluster.
pub enum Nats {
    /// One nats-server.
    Single(TestNats),
    /// A JetStream cluster.
    Cluster(TestNatsCluster),
}

impl Nats {
    /// The identity `name` of the test identities.
    pub fn identity(&self, name: &str) -> anyhow::Result<flexcore_security::Identity> {
        match self {
            Nats::Single(nats) => nats.identity(name),
            Nats::Cluster(nats) => nats.identity(name),
        }
    }

    /// A new client as the harness (no permission limits).
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        match self {
            Nats::Single(nats) => nats.client().await,
            Nats::Cluster(nats) => nats.client().await,
        }
    }

    /// The variables that connect a process as `identity`, to node `node` of a cluster.
    fn env_for(&self, identity: &str, node: usize) -> Vec<(String, String)> {
        match self {
            Nats::Single(nats) => nats.env_for(identity),
            Nats::Cluster(nats) => nats.env_for(identity, node),
        }
    }

    /// The single server (panics on a cluster).
    pub fn single(&mut self) -> &mut TestNats {
        match self {
            Nats::Single(nats) => nats,
            Nats::Cluster(_) => panic!("this fault needs a single nats-server"),
        }
    }

    /// The cluster (panics on a single server).
    pub fn cluster(&mut self) -> &mut TestNatsCluster {
        match self {
            Nats::Cluster(nats) => nats,
            Nats::Single(_) => panic!("this fault needs a NATS cluster"),
        }
    }
}

/// One replica of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Replica {
    /// The service.
    pub service: Service,
    /// Its number, from 0.
    pub index: usize,
}

impl std::fmt::Display for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.service.binary(), self.index)
    }
}

/// The log line of the relay's leader.
pub const RELAY_LEADER_LINE: &str = "relay leadership acquired";
/// The log line of a projection's leader (with `"projection":"<name>"`).
pub const PROJECTION_LEADER_LINE: &str = "projection leadership acquired";
/// The projections, each with a leader.
pub const PROJECTIONS: [&str; 5] = ["plugins", "pipelines", "runs", "schedules", "audit"];
/// Bound on a fail-over (not a performance claim: one that takes longer is broken).
pub const FAILOVER_BOUND: Duration = Duration::from_secs(60);

/// The services as binaries over a private Postgres and nats-server.
pub struct Cluster {
    /// The private Postgres server (database `postgres` holds the event store).
    pub pg: TestPostgres,
    /// The private nats-server or cluster.
    pub nats: Nats,
    /// How many of each run.
    pub layout: Layout,
    /// A pool on the event store, for the test's own reads.
    pub db: PgPool,
    /// The test's own NATS connection (it reconnects after a NATS restart).
    pub client: async_nats::Client,
    /// JetStream on it.
    pub js: async_nats::jetstream::Context,
    /// Where the services' logs are written.
    pub logs: PathBuf,
    env: Vec<(String, String)>,
    running: Vec<(Replica, ServiceProcess)>,
    _logs_dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts the servers and the four services, each configured by environment variables
    /// (`FLEXCORE__…`): the servers' URLs, then `settings` (which win). Logs go to `logs`,
    /// or to a temporary directory when `None`. Returns once every service logged its
    /// ready line.
    pub async fn start(settings: &[(&str, String)], logs: Option<&Path>) -> Self {
        Self::start_layout(Layout::SINGLE, settings, logs).await
    }

    /// [`Self::start`] with `layout`'s replicas and NATS. On a cluster the streams have
    /// `min(nodes, 3)` replicas (`FLEXCORE__STREAMS__REPLICAS` is set to match, so the
    /// services' check of the streams' settings agrees).
    pub async fn start_layout(layout: Layout, settings: &[(&str, String)], logs: Option<&Path>) -> Self {
        let pg = TestPostgres::start().await.unwrap();
        let stream_replicas = layout.nats_nodes.min(3);
        let nats = if layout.nats_nodes > 1 {
            Nats::Cluster(
                TestNatsCluster::start(layout.nats_nodes, stream_replicas)
                    .await
                    .unwrap(),
            )
        } else {
            Nats::Single(TestNats::start().await.unwrap())
        };
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
        let mut env = vec![("FLEXCORE__DATABASE__URL".to_owned(), pg.url())];
        if layout.nats_nodes > 1 {
            env.push(("FLEXCORE__STREAMS__REPLICAS".to_owned(), stream_replicas.to_string()));
        }
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
            layout,
            db,
            client,
            js,
            logs,
            env,
            running: Vec::new(),
            _logs_dir: logs_dir,
        };
        for service in Service::ALL {
            for index in 0..layout.of(service) {
                let replica = Replica { service, index };
                cluster.spawn_replica(replica);
                cluster.wait_replica_ready(replica, Duration::from_secs(120)).await;
            }
        }
        cluster
    }

    /// Starts `service` (again; its first replica), without waiting for it to be ready.
    pub fn spawn(&mut self, service: Service) {
        self.spawn_replica(Replica { service, index: 0 });
    }

    /// Starts `replica` (again), without waiting for it to be ready. With more than one
    /// replica of a service, each has its own runner id (`<runner_id>-<n>`) or scheduler
    /// instance and identity (`scheduler-a`, `-b`, `-c`); on a NATS cluster, replica n of
    /// service s connects to node (s + n) mod nodes.
    pub fn spawn_replica(&mut self, replica: Replica) {
        let Replica { service, index } = replica;
        let many = self.layout.of(service) > 1;
        let mut identity = service.identity().to_owned();
        let mut own: Vec<(String, String)> = Vec::new();
        if many && service == Service::Scheduler {
            let name = flexcore_testkit::nats::SCHEDULER_REPLICAS[index];
            identity = format!("scheduler-{name}");
            own.push(("FLEXCORE__SCHEDULER__INSTANCE_ID".to_owned(), identity.clone()));
        }
        if many && service == Service::Runner {
            own.push(("FLEXCORE__RUNNER__RUNNER_ID".to_owned(), self.runner_id(index)));
        }
        let mut env = self.nats.env_for(&identity, service as usize + index);
        env.extend(own);
        let env: Vec<(&str, String)> = self
            .env
            .iter()
            .chain(&env)
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let process = ServiceProcess::start(service.binary(), &env, &self.logs);
        self.running.retain(|(r, _)| *r != replica);
        self.running.push((replica, process));
    }

    fn process(&mut self, service: Service) -> &mut ServiceProcess {
        self.replica_process(Replica { service, index: 0 })
    }

    fn replica_process(&mut self, replica: Replica) -> &mut ServiceProcess {
        self.running
            .iter_mut()
            .find(|(r, _)| *r == replica)
            .map(|(_, p)| p)
            .unwrap_or_else(|| panic!("{replica} is not running"))
    }

    /// The runner id replica `index` of the runners claims attempts as (with more than
    /// one runner).
    pub fn runner_id(&self, index: usize) -> String {
        let base = self
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "FLEXCORE__RUNNER__RUNNER_ID")
            .map_or("runner", |(_, v)| v.as_str());
        format!("{base}-{index}")
    }

    /// The current log of `replica`.
    pub fn log_of(&self, replica: Replica) -> String {
        self.running
            .iter()
            .find(|(r, _)| *r == replica)
            .map(|(_, p)| p.log_text())
            .unwrap_or_default()
    }

    /// kill -9 of `replica` (it stays down until [`Self::spawn_replica`]); returns when.
    pub fn kill_replica(&mut self, replica: Replica) -> Instant {
        self.replica_process(replica).kill9();
        Instant::now()
    }

    /// Waits (at most `within`) until `replica` logged its ready line.
    pub async fn wait_replica_ready(&mut self, replica: Replica, within: Duration) {
        self.replica_process(replica)
            .wait_logged(replica.service.ready_line(), within)
            .await;
    }

    /// Replicas of `service` whose process runs, and how many times each logged `line`
    /// (with `also` on the same line, if given) in its current log.
    fn counts(&mut self, service: Service, line: &str, also: Option<&str>) -> Vec<(Replica, usize)> {
        self.running
            .iter_mut()
            .filter(|(r, _)| r.service == service)
            .filter_map(|(r, p)| p.is_running().then_some((r, p)))
            .map(|(r, p)| {
                let n = p
                    .log_text()
                    .lines()
                    .filter(|l| l.contains(line) && also.is_none_or(|a| l.contains(a)))
                    .count();
                (*r, n)
            })
            .collect()
    }

    /// The running replica that most recently logged `line` (`also` on it), if any: the
    /// leader when `line` is what a leader logs on taking over (a replica that lost
    /// leadership logs it again when it takes it back). Among several that logged it
    /// (an earlier leader lost it), the last one to have started leading: found by the
    /// time stamp of the line.
    fn leader(&mut self, service: Service, line: &str, also: Option<&str>) -> Option<Replica> {
        let mut best: Option<(String, Replica)> = None;
        for (replica, process) in self.running.iter_mut() {
            if replica.service != service || !process.is_running() {
                continue;
            }
            let text = process.log_text();
            let last = text
                .lines()
                .rfind(|l| l.contains(line) && also.is_none_or(|a| l.contains(a)))
                .map(timestamp_of);
            if let Some(at) = last {
                if best.as_ref().is_none_or(|(b, _)| at > *b) {
                    best = Some((at, *replica));
                }
            }
        }
        best.map(|(_, r)| r)
    }

    /// The command-service replica leading the relay.
    pub fn relay_leader(&mut self) -> Option<Replica> {
        self.leader(Service::Command, RELAY_LEADER_LINE, None)
    }

    /// The projection replica leading projection `name`.
    pub fn projection_leader(&mut self, name: &str) -> Option<Replica> {
        let also = format!("\"projection\":\"{name}\"");
        self.leader(Service::Projection, PROJECTION_LEADER_LINE, Some(&also))
    }

    /// Waits until a running replica other than `killed` logged `line` (`also` on it) more
    /// often than `before` says it had; the time since `since`.
    async fn taken_over(
        &mut self,
        service: Service,
        line: &str,
        also: Option<&str>,
        killed: Replica,
        before: &[(Replica, usize)],
        since: Instant,
    ) -> Duration {
        loop {
            let now = self.counts(service, line, also);
            let taken = now
                .iter()
                .any(|(r, n)| *r != killed && *n > before.iter().find(|(b, _)| b == r).map_or(0, |(_, m)| *m));
            if taken {
                return since.elapsed();
            }
            assert!(
                since.elapsed() < FAILOVER_BOUND,
                "no replica of {} took over ({line} {also:?}) within {FAILOVER_BOUND:?} of killing {killed}\n{}",
                service.binary(),
                self.log_tails(20)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
                    failover: Vec::new(),
                }
            }
            Fault::NatsRestart | Fault::NatsKill => {
                if fault == Fault::NatsKill {
                    self.nats.single().kill();
                } else {
                    self.nats.single().stop();
                }
                tokio::time::sleep(downtime).await;
                self.nats.single().restart().await.unwrap();
                Injected {
                    fault,
                    ended: Instant::now(),
                    ready_after: None,
                    failover: Vec::new(),
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
                    failover: Vec::new(),
                }
            }
            Fault::NatsNodeKill => self.kill_stream_leader_node(downtime).await,
            Fault::KillRelayLeader => {
                let leader = self.relay_leader().expect("no replica leads the relay");
                let before = self.counts(Service::Command, RELAY_LEADER_LINE, None);
                let killed = self.kill_replica(leader);
                let relay = self
                    .taken_over(Service::Command, RELAY_LEADER_LINE, None, leader, &before, killed)
                    .await;
                self.restart_after(leader, killed, downtime, fault, vec![("relay".to_owned(), relay)])
                    .await
            }
            Fault::KillProjectionLeader => {
                let leaders: Vec<(&str, Option<Replica>)> =
                    PROJECTIONS.iter().map(|p| (*p, self.projection_leader(p))).collect();
                let mut led: Vec<(Replica, usize)> = Vec::new();
                for (_, leader) in &leaders {
                    let leader = leader.expect("a projection without a leader");
                    match led.iter_mut().find(|(r, _)| *r == leader) {
                        Some((_, n)) => *n += 1,
                        None => led.push((leader, 1)),
                    }
                }
                led.sort_by_key(|(r, n)| (std::cmp::Reverse(*n), *r));
                let victim = led[0].0;
                let befores: Vec<(&str, Vec<(Replica, usize)>)> = leaders
                    .iter()
                    .filter(|(_, l)| *l == Some(victim))
                    .map(|(p, _)| {
                        let also = format!("\"projection\":\"{p}\"");
                        (
                            *p,
                            self.counts(Service::Projection, PROJECTION_LEADER_LINE, Some(&also)),
                        )
                    })
                    .collect();
                let killed = self.kill_replica(victim);
                let mut failover = Vec::new();
                for (p, before) in befores {
                    let also = format!("\"projection\":\"{p}\"");
                    let took = self
                        .taken_over(
                            Service::Projection,
                            PROJECTION_LEADER_LINE,
                            Some(&also),
                            victim,
                            &before,
                            killed,
                        )
                        .await;
                    failover.push((format!("projection {p}"), took));
                }
                self.restart_after(victim, killed, downtime, fault, failover).await
            }
        }
    }

    /// Starts `replica` again, at least `downtime` after `killed`; the fault's
    /// [`Injected`], `ended` at the kill.
    async fn restart_after(
        &mut self,
        replica: Replica,
        killed: Instant,
        downtime: Duration,
        fault: Fault,
        failover: Vec<(String, Duration)>,
    ) -> Injected {
        tokio::time::sleep_until((killed + downtime).into()).await;
        self.spawn_replica(replica);
        let started = Instant::now();
        self.wait_replica_ready(replica, Duration::from_secs(120)).await;
        Injected {
            fault,
            ended: killed,
            ready_after: Some(started.elapsed()),
            failover,
        }
    }

    /// The node leading stream `name`, by asking the cluster (`None` when no answer
    /// comes within half a second: a stream without a leader does not answer, and the
    /// default request timeout would make the fail-over look seconds longer).
    pub async fn stream_leader(&mut self, name: &str) -> Option<usize> {
        let ask = async {
            let mut stream = self.js.get_stream(name).await.ok()?;
            let info = stream.info().await.ok()?;
            info.cluster.as_ref()?.leader.clone()
        };
        let leader = tokio::time::timeout(Duration::from_millis(500), ask).await.ok()??;
        self.nats.cluster().node_named(&leader)
    }

    /// kill -9 of the node leading `FLEXCORE_EVENTS`; measures until another node leads
    /// it, then starts the node again after `downtime` (same store: it catches up).
    async fn kill_stream_leader_node(&mut self, downtime: Duration) -> Injected {
        let stream = flexcore_contracts::subjects::EVENTS_STREAM;
        let victim = self.stream_leader(stream).await.expect("FLEXCORE_EVENTS has no leader");
        self.nats.cluster().kill(victim);
        let killed = Instant::now();
        let elected = loop {
            match self.stream_leader(stream).await {
                Some(node) if node != victim => break killed.elapsed(),
                _ => {}
            }
            assert!(
                killed.elapsed() < FAILOVER_BOUND,
                "FLEXCORE_EVENTS had no new leader within {FAILOVER_BOUND:?} of killing node {victim}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        tokio::time::sleep_until((killed + downtime).into()).await;
        self.nats.cluster().restart(victim).await.unwrap();
        Injected {
            fault: Fault::NatsNodeKill,
            ended: killed,
            ready_after: None,
            failover: vec![("events stream leader".to_owned(), elected)],
        }
    }

    /// The replicas whose process exited (none should on its own).
    pub fn exited(&mut self) -> Vec<Replica> {
        self.running
            .iter_mut()
            .filter_map(|(r, p)| (!p.is_running()).then_some(*r))
            .collect()
    }

    /// The last `lines` lines of every service's current log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for (replica, process) in &self.running {
            let text = process.log_text();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "--- {replica} ({}) ---\n{}\n",
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

/// The `"timestamp"` of a JSON log line (RFC 3339, so its text sorts by time), or "".
fn timestamp_of(line: &str) -> String {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("timestamp").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_default()
}
