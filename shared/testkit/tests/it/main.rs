//! Integration tests of `flexcore-testkit` against real PostgreSQL and a real
//! `nats-server` (one test binary).

// Helpers outside `#[test]` functions fail the test just like the tests do.
#![allow(clippy::unwrap_used)]

mod db;
mod nats;
mod wait;
