#!/usr/bin/env bash
# The web console's page times with large read models, on a whole local stack without a
# plugin runner: `flexctl dev --no-runner` (release binaries; a private nats-server, the
# local Postgres, the services and the gateway, anonymous callers as admin on 127.0.0.1
# only), then `flexctl bench console`, which seeds the read models up to the sizes asked
# (runs claimed and ended as the stack's runner identity) and requests every page, one
# request at a time.
#
#   scripts/bench-console.sh [BENCH ARGS]   (default: --pipelines 10000 --runs 100000 --schedules 1000 --requests 300)
#
# The stack's state (keys, NATS store) stays in $FLEXCORE_BENCH_STATE (default
# .flexcore/bench-console) and its database (default flexcore_bench_console) stays too, so
# a second run measures again without seeding. Delete both to start afresh:
#   rm -rf .flexcore/bench-console; dropdb -U postgres flexcore_bench_console
# Needs Postgres, nats-server and the release build (scripts/dev.sh builds it, or cargo
# build --release --bins). Used for docs/benchmarks.md ("Web console").
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/dev-stack.sh
bin=target/release
state=${FLEXCORE_BENCH_STATE:-.flexcore/bench-console}
port=${FLEXCORE_BENCH_HTTP_PORT:-18090}
nats_port=${FLEXCORE_BENCH_NATS_PORT:-14343}
admin_port=${FLEXCORE_BENCH_ADMIN_PORT:-19291}
db=${FLEXCORE__DATABASE__URL:-postgres://postgres@127.0.0.1:5432/flexcore_bench_console}
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(--pipelines 10000 --runs 100000 --schedules 1000 --requests 300)
mkdir -p "$state"
# One caller (anonymous) makes every request: the per-caller rate limit would measure
# itself, so it is off here (0).
export FLEXCORE__GATEWAY__RATE_LIMIT_PER_SECOND=0
dev=
trap '[[ -z $dev ]] || { kill -INT $dev 2>/dev/null; wait $dev 2>/dev/null; }' EXIT
start_dev_stack "$state/dev.log" --nats-url "nats://127.0.0.1:$nats_port" dev --database-url "$db" \
  --state-dir "$state" --bin-dir "$bin" --no-runner \
  --http-port "$port" --admin-port "$admin_port" --anonymous-role admin
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
keys="$state/keys"
export FLEXCORE__NATS__NKEY_SEED_FILE="$keys/flexctl.nk" FLEXCORE__SECURITY__IDENTITIES_FILE="$keys/identities.json"
"$bin/flexctl" --nats-url "nats://127.0.0.1:$nats_port" bench console \
  --url "http://127.0.0.1:$port" --runner-seed-file "$keys/runner.nk" "${args[@]}"
