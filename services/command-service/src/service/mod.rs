//! The command service's I/O: NATS request loop ([`server`]), command execution
//! ([`executor`]) with its decision logic apart and free of I/O ([`snapshot`]), aggregate
//! loading ([`cache`]), and metrics and readiness checks ([`metrics`]).

pub mod cache;
pub mod executor;
pub mod metrics;
pub mod server;
pub mod snapshot;
