#!/usr/bin/env bash
# Throughput with 1, 2, 3 … replicas of the command and projection services on a
# three-node NATS cluster (three nats-server processes run from deploy/nats/nats-server.conf,
# every stream at three replicas), the numbers in docs/benchmarks.md ("Replicas").
#
#   scripts/bench-replicas.sh [--replicas "1 2 3"] [--duration 20s] [--clients 64]
#                             [--rate 1000] [--commands-only] [--out FILE]
#
#   --replicas LIST  replica counts to measure, each on a fresh stack (default "1 2 3")
#   --duration D     measured window of each benchmark (default 20s; 3 s warm-up each)
#   --clients N      clients of `flexctl bench commands` and `bench queries` (default 64)
#   --rate R         commands per second of `flexctl bench lag` (default 1000)
#   --commands-only  only `bench commands` (no lag, no queries)
#   --out FILE       append the results to FILE (default: stdout only)
#
# For each count N: a fresh database on the local PostgreSQL (127.0.0.1:5432, trust auth;
# PGHOST/PGPORT override), a fresh NATS cluster, `flexcore-command setup` with
# FLEXCORE__STREAMS__REPLICAS=3, then N flexcore-command (one relay leader, N-1 standbys)
# and N flexcore-projection replicas, replica i connected to node i mod 3; then
# `flexctl bench commands --skip-raw`, `bench lag` and `bench queries` against node 0.
# Each replica's pool has min(16, 32/N) connections (database.max_connections), so that
# the 2N services with their lock connections stay within Postgres's default
# max_connections of 100: with 16 each, three of each need 117, and the replica left
# without connections answers `unavailable`.
# Release binaries: `cargo build --release -p flexcore-command -p flexcore-projection -p flexctl -p flexcore-dev`
# (BIN_DIR overrides target/release). The benchmark clients share the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,26p' "$0" >&2; exit 2; }
replicas="1 2 3"
duration=20s
clients=64
rate=1000
commands_only=""
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --replicas) replicas="$2"; shift ;;
    --duration) duration="$2"; shift ;;
    --clients) clients="$2"; shift ;;
    --rate) rate="$2"; shift ;;
    --commands-only) commands_only=1; shift; continue ;;
    --out) out="$2"; shift ;;
    *) usage ;;
  esac
  shift
done

bin=${BIN_DIR:-target/release}
bin=$(cd "$bin" && pwd)
for b in flexcore-command flexcore-projection flexctl flexcore-dev; do
  [[ -x $bin/$b ]] || { echo "no $bin/$b: cargo build --release -p flexcore-command -p flexcore-projection -p flexctl -p flexcore-dev" >&2; exit 1; }
done
nats_server=${FLEXCORE_TEST_NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
pg_host=${PGHOST:-127.0.0.1}
pg_port=${PGPORT:-5432}
psql_() { psql -h "$pg_host" -p "$pg_port" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
conf=$PWD/deploy/nats/nats-server.conf

work=""
db=""
pids=()
stop_all() {
  set +e
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  pids=()
  [[ -n $db ]] && psql_ -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
  [[ -n $work ]] && rm -rf "$work"
  db=""
  work=""
  set -e
}
trap stop_all EXIT

# A free TCP port (below the ephemeral range, which outgoing connections take).
port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

wait_logged() {
  local log=$1 pid=$2 marker=$3
  for _ in $(seq 1 600); do
    grep -q "$marker" "$log" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { tail -30 "$log" >&2; exit 1; }
    sleep 0.2
  done
  echo "$log: no '$marker' within 2 minutes" >&2
  exit 1
}

report() { if [[ -n $out ]]; then tee -a "$out"; else cat; fi; }

{
  echo "## bench-replicas $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $("$nats_server" --version 2>&1 | head -1), $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
} | report

for n in $replicas; do
  work=$(mktemp -d /tmp/flexcore-replicas.XXXXXX)
  db="flexcore_replicas_$$_$n"
  psql_ -d postgres -c "CREATE DATABASE $db" >/dev/null
  "$bin/flexctl" security init --dir "$work/keys" >/dev/null
  mkdir -p "$work/nats"
  cp "$conf" "$work/nats/nats-server.conf"
  cp "$work/keys/nats-accounts.conf" "$work/nats/nats-accounts.conf"
  client_ports=() monitor_ports=() cluster_ports=()
  for i in 0 1 2; do client_ports+=("$(port)"); monitor_ports+=("$(port)"); cluster_ports+=("$(port)"); done
  routes="[nats://127.0.0.1:${cluster_ports[0]}, nats://127.0.0.1:${cluster_ports[1]}, nats://127.0.0.1:${cluster_ports[2]}]"
  for i in 0 1 2; do
    NATS_SERVER_NAME="bench-n$i" NATS_CLIENT_PORT="${client_ports[$i]}" NATS_MONITOR_PORT="${monitor_ports[$i]}" \
      NATS_STORE_DIR="$work/nats/store-$i" NATS_CLUSTER_LISTEN="127.0.0.1:${cluster_ports[$i]}" NATS_ROUTES="$routes" \
      "$nats_server" -c "$work/nats/nats-server.conf" >"$work/nats-$i.log" 2>&1 &
    pids+=($!)
  done
  export FLEXCORE__DATABASE__URL="postgres://postgres@$pg_host:$pg_port/$db"
  export FLEXCORE__SECURITY__IDENTITIES_FILE="$work/keys/identities.json"
  export FLEXCORE__TELEMETRY__LOG_FORMAT=json
  export FLEXCORE__STREAMS__REPLICAS=3
  pool=$((32 / n)); ((pool > 16)) && pool=16
  export FLEXCORE__DATABASE__MAX_CONNECTIONS=$pool
  url() { echo "nats://127.0.0.1:${client_ports[$(($1 % 3))]}"; }
  # Setup needs the JetStream meta leader and all three peers: retried.
  for attempt in $(seq 1 60); do
    if FLEXCORE__NATS__URL=$(url 0) FLEXCORE__NATS__NKEY_SEED_FILE="$work/keys/setup.nk" \
      "$bin/flexcore-command" setup >"$work/setup.log" 2>&1; then
      break
    fi
    [[ $attempt == 60 ]] && { cat "$work/setup.log" >&2; exit 1; }
    sleep 0.5
  done
  for ((i = 0; i < n; i++)); do
    FLEXCORE__NATS__URL=$(url "$i") FLEXCORE__NATS__NKEY_SEED_FILE="$work/keys/command.nk" \
      "$bin/flexcore-command" >"$work/command-$i.log" 2>&1 &
    pids+=($!)
    wait_logged "$work/command-$i.log" "$!" 'serving commands'
  done
  for ((i = 0; i < n; i++)); do
    FLEXCORE__NATS__URL=$(url $((i + 1))) FLEXCORE__NATS__NKEY_SEED_FILE="$work/keys/projection.nk" \
      "$bin/flexcore-projection" >"$work/projection-$i.log" 2>&1 &
    pids+=($!)
    wait_logged "$work/projection-$i.log" "$!" 'serving queries'
  done
  sleep 1
  flexctl=("$bin/flexctl" --nats-url "$(url 0)" --nkey-seed-file "$work/keys/flexctl.nk"
           --identities-file "$work/keys/identities.json")
  {
    echo
    echo "### $n command + $n projection replicas ($pool pooled connections each)"
    echo
    echo '```'
    "${flexctl[@]}" bench commands --clients "$clients" --duration "$duration" --warmup 3s --skip-raw 2>>"$work/bench.log"
    if [[ -z $commands_only ]]; then
      "${flexctl[@]}" bench lag --rate "$rate" --duration "$duration" --warmup 3s 2>>"$work/bench.log"
      "${flexctl[@]}" bench queries --clients "$clients" --duration "$duration" --warmup 3s 2>>"$work/bench.log"
    fi
    # The first error of each kind in each phase, with its message.
    grep -h 'first error of its kind' "$work/bench.log" | sed 's/^/  /' || true
    echo '```'
    leaders=$(grep -l 'relay leadership acquired' "$work"/command-*.log | xargs -n1 basename | tr '\n' ' ')
    echo "relay leader: $leaders; projection leaders: $(grep -h 'projection leadership acquired' "$work"/projection-*.log | grep -o '"projection":"[a-z]*"' | sort | uniq -c | tr -s ' ' | tr '\n' ' ')"
  } | report
  stop_all
done
