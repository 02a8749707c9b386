//! FlexCore end to end: regression tests of the contract and delivery guarantees on the
//! real services, a private NATS and Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
mod chaos;
mod cluster;
mod contract;
mod delivery;
mod exact;
mod fuzz;
mod hostile;
mod janitor;
mod rebuild;
mod relay;
#[path = "../../../../shared/service/tests/support/scrape.rs"]
mod scrape;
mod secrets;
mod security;
mod setup;
mod shutdown;
mod sizes;
