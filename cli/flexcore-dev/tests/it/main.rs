//! flexcore-dev integration tests: the command benchmark against a real command service
//! (its own fresh database and private nats-server per test), and without one. `flexctl
//! dev` and `flexctl bench console` are tested through flexctl (cli/flexctl/tests/it/dev.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod bench;

use flexcore_config::{Secret, Settings};
use flexcore_testkit::{TestDb, TestNats};
use flexctl::nats::{Nats, NatsLogin};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Service {
    pub db: TestDb,
    pub nats: TestNats,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

/// `nats_url` as the `flexctl` identity (role admin), as `flexctl` with
/// `--nkey-seed-file` logs in and signs.
pub fn operator(nats_url: &str) -> Nats {
    let login = NatsLogin {
        identity: Some(flexcore_testkit::nats::test_identity("flexctl").unwrap()),
        ..Default::default()
    };
    Nats::new(nats_url, login)
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
