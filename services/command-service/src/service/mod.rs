//! The command service's I/O: NATS request loop ([`server`]), command execution
//! ([`executor`]) and aggregate loading ([`cache`]).

pub mod cache;
pub mod executor;
pub mod server;
