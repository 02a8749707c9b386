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
psql_() { psql -h "$pg_host" -p "$pg_port" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

nats_pid=""
cleanup() {
  set +e
  if [[ -n $nats_pid ]]; then kill "$nats_pid" 2>/dev/null; wait "$nats_pid" 2>/dev/null; fi
  psql_ -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

psql_ -d postgres -c "CREATE DATABASE $db" >/dev/null
"$flexctl" security init --dir "$work/keys" >/dev/null
printf 'listen: "127.0.0.1:%s"\nmax_payload: 1MB\njetstream { store_dir: "%s", max_file_store: 64GB }\ninclude ./keys/nats-accounts.conf\n' \
  "$nats_port" "$work/nats" >"$work/nats.conf"
nats-server -c "$work/nats.conf" >"$work/nats.log" 2>&1 &
nats_pid=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
  kill -0 "$nats_pid" 2>/dev/null || { cat "$work/nats.log" >&2; exit 1; }
  sleep 0.1
done

export FLEXCORE__DATABASE__URL="postgres://postgres@$pg_host:$pg_port/$db"
export FLEXCORE__NATS__URL="nats://127.0.0.1:$nats_port"
FLEXCORE__NATS__NKEY_SEED_FILE="$work/keys/setup.nk" FLEXCORE__SECURITY__IDENTITIES_FILE="$work/keys/identities.json" \
  "$bin_dir/flexcore-command" setup >"$work/setup.log" 2>&1
"$flexctl" --nats-url "$FLEXCORE__NATS__URL" --nkey-seed-file "$work/keys/flexctl.nk" \
  --identities-file "$work/keys/identities.json" bench cold-start --bin-dir "$bin_dir" --keys-dir "$work/keys" \
  --database-url "$FLEXCORE__DATABASE__URL" "${bench_args[@]}"
