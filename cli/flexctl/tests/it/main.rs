//! flexctl integration tests: commands against a real command service (its own fresh
//! database and private nats-server per test), and `flexctl dev` (flexcore-dev behind
//! it) as a user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../common/service.rs"]
mod service;

mod apply;
mod dev;
mod dev_signals;
mod docs_commands;
mod list_all;
mod operator;
mod plugin;
mod run_start;
mod schedule;
mod security;
mod status;
mod streams;

/// The API on `client`, signing as the `flexctl` identity (role admin), as `flexctl` with
/// `--nkey-seed-file` does.
pub fn operator_api(client: async_nats::Client) -> flexctl::api::Api {
    let identity = flexcore_testkit::nats::test_identity("flexctl").unwrap();
    flexctl::api::Api::new(flexcore_client::Client::new(client).with_identity(identity))
}

pub use service::{spawn_service, Service};
