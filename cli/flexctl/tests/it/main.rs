//! flexctl integration tests: commands against a real command service (its own fresh
//! database and private nats-server per test), and `flexctl dev` (flexcore-dev behind
//! it) as a user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod dev;
mod list_all;
mod plugin;
mod schedule;

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

/// The API on `client`, signing as the `flexctl` identity (role admin), as `flexctl` with
/// `--nkey-seed-file` does.
pub fn operator_api(client: async_nats::Client) -> flexctl::api::Api {
    let identity = flexcore_testkit::nats::test_identity("flexctl").unwrap();
    flexctl::api::Api::new(flexcore_client::Client::new(client).with_identity(identity))
}

pub async fn spawn_service() -> Service {
    flexcore_testkit::init_tracing();
    let db = TestDb::create().await.unwrap();
    let nats = TestNats::start().await.unwrap();
    let mut settings = Settings::default();
    settings.database.url = Secret::new(db.url.clone());
    nats.settings_for("command", &mut settings);
    let (pool, client) = flexcore_command::connect(&settings).await.unwrap();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move { flexcore_command::run(&settings, client, pool, token).await });
    flexcore_testkit::nats::commands_answered(&nats.client().await.unwrap())
        .await
        .unwrap();
    Service {
        db,
        nats,
        shutdown,
        task,
    }
}
