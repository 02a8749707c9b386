//! A private three-node (or n-node) NATS cluster with JetStream, run from the deployment's
//! own configuration, `deploy/nats/nats-server.conf`: the file is copied as it is, next to
//! the test identities' accounts block (it includes `./nats-accounts.conf`), and each node
//! gets its name, ports, store directory and routes through the environment variables the
//! file reads (`NATS_SERVER_NAME`, `NATS_CLIENT_PORT`, `NATS_MONITOR_PORT`,
//! `NATS_STORE_DIR`, `NATS_CLUSTER_LISTEN`, `NATS_ROUTES`), as a Kubernetes StatefulSet
//! gives them.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use flexcore_security::kit::{Kit, IDENTITIES_FILE};
use flexcore_security::Identity;
use tokio::time::Instant;

use crate::nats::{find_binary, is_our_server, kit};

/// How long a node may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the cluster may take to elect a JetStream meta leader and take the streams.
const STREAMS_TIMEOUT: Duration = Duration::from_secs(60);

/// The deployment's cluster configuration.
pub fn deploy_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nats/nats-server.conf")
}

#[derive(Debug)]
struct Node {
    name: String,
    client_port: u16,
    monitor_port: u16,
    cluster_port: u16,
    child: Option<Child>,
}

/// Nodes of a JetStream cluster on `127.0.0.1`, random ports, stores in a temporary
/// directory; the same identities as [`crate::TestNats`] ([`kit`]). Killed when dropped.
#[derive(Debug)]
pub struct TestNatsCluster {
    nodes: Vec<Node>,
    binary: PathBuf,
    kit: Kit,
    // Last field: removed only after the servers are gone.
    dir: tempfile::TempDir,
}

impl TestNatsCluster {
    /// Starts `nodes` nodes, waits until each accepts connections, then creates the
    /// system's streams as the `setup` identity does with `replicas` replicas (retried
    /// until the cluster has elected its JetStream meta leader and every peer joined).
    pub async fn start(nodes: usize, replicas: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("flexcore-nats-cluster-")
            .tempdir()
            .context("creating the nats cluster directory")?;
        let kit = kit().clone();
        kit.write(&dir.path().join("identities"))
            .context("writing the test identities")?;
        let conf = dir.path().join("conf");
        std::fs::create_dir_all(&conf)?;
        let source = deploy_config();
        std::fs::copy(&source, conf.join("nats-server.conf"))
            .with_context(|| format!("copying {}", source.display()))?;
        std::fs::write(conf.join("nats-accounts.conf"), kit.accounts_block())?;
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let mut taken = Vec::new();
        let mut port = || -> anyhow::Result<u16> {
            loop {
                let p = crate::unused_port()?;
                if !taken.contains(&p) {
                    taken.push(p);
                    return Ok(p);
                }
            }
        };
        let mut list = Vec::new();
        for i in 0..nodes {
            list.push(Node {
                name: format!("flexcore-test-{}-n{i}", &tag[..8]),
                client_port: port()?,
                monitor_port: port()?,
                cluster_port: port()?,
                child: None,
            });
        }
        let mut cluster = Self {
            nodes: list,
            binary: find_binary()?,
            kit,
            dir,
        };
        for i in 0..nodes {
            cluster.spawn(i)?;
        }
        for i in 0..nodes {
            cluster.wait_ready(i).await?;
        }
        cluster.set_up_streams(replicas).await?;
        Ok(cluster)
    }

    /// Creates (or updates) the system's streams and plugin bucket with `replicas`
    /// replicas, as the `setup` identity; retried while the cluster cannot place them yet.
    pub async fn set_up_streams(&self, replicas: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + STREAMS_TIMEOUT;
        let settings = flexcore_eventstore::streams::StreamSettings {
            replicas,
            ..Default::default()
        };
        loop {
            let attempt = async {
                let client = self.client_as("setup").await?;
                let js = async_nats::jetstream::new(client.clone());
                flexcore_eventstore::streams::setup(&js, &settings).await?;
                client.flush().await?;
                anyhow::Ok(())
            };
            match attempt.await {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() < deadline => {
                    tracing::debug!(%error, "streams not placed yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => return Err(error.context("setting up the streams on the cluster")),
            }
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Client URL of node `i`, `nats://127.0.0.1:<port>`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// Every node's client URL.
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.url(i)).collect()
    }

    /// The server name of node `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The node named `server_name`.
    pub fn node_named(&self, server_name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == server_name)
    }

    /// The monitoring port of node `i` (`/jsz`, `/healthz`).
    pub fn monitor_port(&self, i: usize) -> u16 {
        self.nodes[i].monitor_port
    }

    /// The log of node `i` (every run of it).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{i}.log"))
    }

    /// The nats-server binary the nodes run.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// A client connected as [`crate::nats::HARNESS`] (no permission limits), knowing
    /// every node.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        self.client_as(crate::nats::HARNESS).await
    }

    /// A client connected as identity `name`, knowing every node, with its inbox prefix.
    pub async fn client_as(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        crate::nats::login_as(&self.kit, name)?
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(self.running_urls())
            .await
            .with_context(|| format!("connecting to the test cluster as {name}"))
    }

    fn running_urls(&self) -> Vec<String> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .map(|i| self.url(i))
            .collect()
    }

    /// The identity `name`.
    pub fn identity(&self, name: &str) -> anyhow::Result<Identity> {
        let trust = flexcore_security::Trust::load(&self.identities_file())?;
        let seed = self
            .kit
            .seed(name)
            .with_context(|| format!("no test identity {name:?}"))?;
        Ok(Identity::from_seed(seed, &trust)?)
    }

    /// The identities file the servers' users come from.
    pub fn identities_file(&self) -> PathBuf {
        self.dir.path().join("identities").join(IDENTITIES_FILE)
    }

    /// The seed file of identity `name`.
    pub fn seed_file(&self, name: &str) -> PathBuf {
        self.dir.path().join("identities").join(format!("{name}.nk"))
    }

    /// The `FLEXCORE__…` variables that point a service process at node `node` as
    /// identity `name` (the client learns the other nodes from the server).
    pub fn env_for(&self, name: &str, node: usize) -> Vec<(String, String)> {
        vec![
            ("FLEXCORE__NATS__URL".to_owned(), self.url(node % self.nodes.len())),
            (
                "FLEXCORE__NATS__NKEY_SEED_FILE".to_owned(),
                self.seed_file(name).display().to_string(),
            ),
            (
                "FLEXCORE__SECURITY__IDENTITIES_FILE".to_owned(),
                self.identities_file().display().to_string(),
            ),
        ]
    }

    /// Whether node `i` runs.
    pub fn is_running(&mut self, i: usize) -> bool {
        match self.nodes[i].child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills node `i` like a crash (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops node `i` gracefully (SIGTERM), killing it after 10 s.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            crate::nats::terminate(&mut child);
        }
    }

    /// Starts node `i` again (stopping it first if it runs): same name, ports and store.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.stop(i);
        self.spawn(i)?;
        self.wait_ready(i).await
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let conf = self.dir.path().join("conf").join("nats-server.conf");
        let routes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .with_context(|| format!("opening {}", self.log_path(i).display()))?;
        let node = &self.nodes[i];
        let _ = writeln!(log.try_clone()?, "--- flexcore testkit: starting {} ---", node.name);
        let store = self.dir.path().join(format!("store-{i}"));
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&conf)
            .env("NATS_SERVER_NAME", &node.name)
            .env("NATS_CLIENT_PORT", node.client_port.to_string())
            .env("NATS_MONITOR_PORT", node.monitor_port.to_string())
            .env("NATS_STORE_DIR", store.display().to_string())
            .env("NATS_CLUSTER_LISTEN", format!("127.0.0.1:{}", node.cluster_port))
            .env("NATS_ROUTES", format!("[{}]", routes.join(", ")))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self, i: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.nodes[i].client_port));
        loop {
            if let Some(Ok(Some(status))) = self.nodes[i].child.as_mut().map(Child::try_wait) {
                bail!(
                    "nats-server node {i} exited during start-up ({status}); log tail:\n{}",
                    self.log_tail(i)
                );
            }
            if is_our_server(addr, &self.nodes[i].name).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "nats-server node {i} not accepting connections on {addr} after {START_TIMEOUT:?}; log tail:\n{}",
                    self.log_tail(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines of node `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for TestNatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
