#!/usr/bin/env bash
# The test command of the README: formatting, lints (warnings denied), every test.
# Needs PostgreSQL on 127.0.0.1:5432 (trust auth; override with FLEXCORE_TEST_DATABASE_URL)
# and the nats-server binary (tests start private servers on random ports).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  # nextest does not run doctests.
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast
fi
