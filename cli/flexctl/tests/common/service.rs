//! A real command service for a CLI test: its own fresh database and private nats-server.
//! Shared by flexctl's and flexcore-dev's integration tests (`#[path]` from each).

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
