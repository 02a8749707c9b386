//! flexctl integration tests: the benchmark against a real command service (its own
//! fresh database and private nats-server per test), and without one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod bench;
mod dev;
mod list_all;
mod plugin;
mod schedule;

use std::time::Duration;

use flexcore_config::{Secret, Settings};
use flexcore_testkit::{TestDb, TestNats};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Service {
    pub db: TestDb,
    pub nats: TestNats,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_service() -> Service {
    flexcore_testkit::init_tracing();
    let db = TestDb::create().await.unwrap();
    let nats = TestNats::start().await.unwrap();
    let mut settings = Settings::default();
    settings.database.url = Secret::new(db.url.clone());
    settings.nats.url = nats.url.clone();
    let (pool, client) = flexcore_command::connect(&settings).await.unwrap();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move { flexcore_command::run(&settings, client, pool, token).await });
    let probe = nats.client().await.unwrap();
    // Ready when it answers (a refusal is an answer).
    flexcore_testkit::wait_until(Duration::from_secs(20), "command service answers", || async {
        let request = probe.request("flexcore.cmd.plugin.enable", "{}".into());
        matches!(
            tokio::time::timeout(Duration::from_millis(500), request).await,
            Ok(Ok(_))
        )
    })
    .await
    .unwrap();
    Service {
        db,
        nats,
        shutdown,
        task,
    }
}
