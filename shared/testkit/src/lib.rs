//! Helpers for integration tests against REAL PostgreSQL and REAL NATS JetStream.
//!
//! # Layout
//! - [`db`]: [`TestDb`], a fresh, migrated database per test, dropped afterwards.
//! - [`nats`]: [`TestNats`], a private `nats-server` with JetStream per test, which can
//!   be stopped and restarted on the same port and store.
//! - [`pg`]: [`TestPostgres`], a private PostgreSQL server per test, which can be
//!   stopped, killed and restarted on the same port and data.
//! - [`wait`]: [`wait_until`] / [`try_wait_until`], waiting on a condition with a
//!   deadline instead of sleeping.
//! - [`ports`]: [`unused_port`], a port for a server a test starts itself.
//! - [`init_tracing`] (here): idempotent test logging.

pub mod db;
pub mod nats;
pub mod nats_cluster;
pub mod pg;
pub mod ports;
pub mod wait;

pub use db::TestDb;
pub use nats::TestNats;
pub use nats_cluster::TestNatsCluster;
pub use pg::TestPostgres;
pub use ports::unused_port;
pub use wait::{try_wait_until, wait_until};

use std::sync::Once;

use tracing_subscriber::EnvFilter;

/// Installs a `tracing` subscriber writing through the test harness (so output shows
/// only for failing tests). `RUST_LOG` is respected; the default is `info`. Safe to call
/// from every test; only the first call (process-wide) has an effect.
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
        // Another subscriber may already be installed (e.g. by the code under test).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}
