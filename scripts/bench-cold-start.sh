#!/usr/bin/env bash
# Service cold start with a long event log, for one build: a fresh database, a private
# nats-server with the identities flexctl generates (NKeys) and `flexcore-command setup`,
# then `flexctl bench cold-start`, which seeds the log, lets the relay publish it and times
# each service of BIN_DIR from its start to its first 200 from /health/ready.
#
#   scripts/bench-cold-start.sh BIN_DIR [-- BENCH ARGS]
#
# BIN_DIR holds the build's service binaries (e.g. target/release); the driver is FLEXCTL
# (default: target/release/flexctl, with the flexcore-dev beside it). Bench arguments
# default to `--events 10000000`. Needs Postgres at PGHOST/PGPORT (default
# 127.0.0.1:5432, user postgres, trust) and nats-server.
set -euo pipefail
usage() { sed -n '2,12p' "$0" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
bin_dir=$(cd "$1" && pwd) || usage
shift
bench_args=()
if [[ $# -gt 0 ]]; then
  [[ $1 == -- ]] || usage
  shift
  bench_args=("$@")
fi
[[ ${#bench_args[@]} -gt 0 ]] || bench_args=(--events 10000000)

flexctl=${FLEXCTL:-$(pwd)/target/release/flexctl}
[[ -x $bin_dir/flexcore-command ]] || { echo "no flexcore-command in $bin_dir" >&2; exit 1; }
[[ -x $flexctl ]] || { echo "no flexctl at $flexctl (set FLEXCTL)" >&2; exit 1; }
pg_host=${PGHOST:-127.0.0.1}
pg_port=${PGPORT:-5432}
nats_port=${NATS_PORT:-4335}
db="flexcore_cold_$$"
work=$(mktemp -d /tmp/flexcore-cold.XXXXXX)
# shellcheck source=scripts/lib/bench-stack.sh
source "$(dirname "$0")/lib/bench-stack.sh"

stack_database
stack_identities "max_file_store: 64GB"
stack_nats

export FLEXCORE__DATABASE__URL="postgres://postgres@$pg_host:$pg_port/$db"
export FLEXCORE__NATS__URL="nats://127.0.0.1:$nats_port"
stack_setup
"$flexctl" --nats-url "$FLEXCORE__NATS__URL" --nkey-seed-file "$work/keys/flexctl.nk" \
  --identities-file "$work/keys/identities.json" bench cold-start --bin-dir "$bin_dir" --keys-dir "$work/keys" \
  --database-url "$FLEXCORE__DATABASE__URL" "${bench_args[@]}"
