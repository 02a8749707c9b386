//! flexcore-dev integration tests: the command benchmark against a real command service
//! (its own fresh database and private nats-server per test), and without one. `flexctl
//! dev` and `flexctl bench console` are tested through flexctl (cli/flexctl/tests/it/dev.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../../../flexctl/tests/common/service.rs"]
mod service;

mod bench;

use flexctl::nats::{Nats, NatsLogin};

/// `nats_url` as the `flexctl` identity (role admin), as `flexctl` with
/// `--nkey-seed-file` logs in and signs.
pub fn operator(nats_url: &str) -> Nats {
    let login = NatsLogin {
        identity: Some(flexcore_testkit::nats::test_identity("flexctl").unwrap()),
        ..Default::default()
    };
    Nats::new(nats_url, login)
}

pub use service::{spawn_service, Service};
