#!/usr/bin/env bash
# What one build's flexcore-command costs per command: starts a fresh database, a
# private nats-server and the build's flexcore-command (optionally under callgrind,
# optionally exporting spans over OTLP), then drives it with `flexctl bench commands`.
#
#   scripts/bench-overhead.sh BIN_DIR [--callgrind] [--otlp http://127.0.0.1:4317] [-- BENCH ARGS]
#
# BIN_DIR holds the build's flexcore-command (e.g. target/release); the driver is
# FLEXCTL (default: target/release/flexctl), the same for every build compared.
#
# Without --callgrind it prints the benchmark's throughput and latency, and the CPU time
# per event appended of the service and of the whole machine. With --callgrind
# the service runs under valgrind's callgrind, which counts instructions rather than
# time (repeatable, whatever else the machine is doing): a first bench round warms the
# service up, then counting is zeroed, a second round runs, and the script prints the
# instructions the service executed in that round per event appended. Bench arguments
# default to `--clients 64 --duration 20s --warmup 3s --skip-raw` (and
# `--clients 16 --duration 30s --warmup 2s --skip-raw` under callgrind). CALLGRIND_OUT=FILE
# keeps the round's profile (for callgrind_annotate).
#
# Needs Postgres at PGHOST/PGPORT (default 127.0.0.1:5432, user postgres, trust), nats-server
# and, for --callgrind, valgrind. Used for docs/benchmarks.md, "Observability cost".
set -euo pipefail

usage() { sed -n '2,22p' "$0" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
bin_dir=$(cd "$1" && pwd) || usage
shift
callgrind=false
otlp=""
bench_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --callgrind) callgrind=true ;;
    --otlp) otlp="$2"; shift ;;
    --) shift; bench_args=("$@"); break ;;
    *) usage ;;
  esac
  shift
done
if [[ ${#bench_args[@]} -eq 0 ]]; then
  if $callgrind; then
    bench_args=(--clients 16 --duration 30s --warmup 2s --skip-raw)
  else
    bench_args=(--clients 64 --duration 20s --warmup 3s --skip-raw)
  fi
fi

flexctl=${FLEXCTL:-$(pwd)/target/release/flexctl}
[[ -x $bin_dir/flexcore-command ]] || { echo "no flexcore-command in $bin_dir" >&2; exit 1; }
[[ -x $flexctl ]] || { echo "no flexctl at $flexctl (set FLEXCTL)" >&2; exit 1; }
pg_host=${PGHOST:-127.0.0.1}
pg_port=${PGPORT:-5432}
nats_port=${NATS_PORT:-4333}
db="flexcore_overhead_$$"
work=$(mktemp -d /tmp/flexcore-overhead.XXXXXX)
psql_() { psql -h "$pg_host" -p "$pg_port" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

service_pid=""
nats_pid=""
cleanup() {
  # Every step runs whatever the one before returned (a killed process's status is not 0).
  set +e
  if [[ -n $service_pid ]]; then kill "$service_pid" 2>/dev/null; wait "$service_pid" 2>/dev/null; fi
  if [[ -n $nats_pid ]]; then kill "$nats_pid" 2>/dev/null; wait "$nats_pid" 2>/dev/null; fi
  psql_ -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

psql_ -d postgres -c "CREATE DATABASE $db" >/dev/null
nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$work/nats" >"$work/nats.log" 2>&1 &
nats_pid=$!

export FLEXCORE__DATABASE__URL="postgres://postgres@$pg_host:$pg_port/$db"
export FLEXCORE__NATS__URL="nats://127.0.0.1:$nats_port"
export FLEXCORE__TELEMETRY__LOG_FORMAT=json
[[ -n $otlp ]] && export FLEXCORE__TELEMETRY__OTLP_ENDPOINT="$otlp"
launcher=()
if $callgrind; then
  launcher=(valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" --dump-instr=no)
fi
"${launcher[@]}" "$bin_dir/flexcore-command" >"$work/service.log" 2>&1 &
service_pid=$!

# Ready once it answers commands (the bench's setup needs that).
for _ in $(seq 1 600); do
  grep -q 'serving commands' "$work/service.log" 2>/dev/null && break
  kill -0 "$service_pid" 2>/dev/null || { cat "$work/service.log" >&2; exit 1; }
  sleep 0.5
done
sleep 1

events() { psql_ -d "$db" -c "SELECT count(*) FROM events"; }

# CPU time (clock ticks) of the service, and of the whole machine (every process: the
# service, Postgres, nats-server, the bench client).
service_ticks() { awk '{print $14 + $15}' "/proc/$service_pid/stat"; }
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }

if ! $callgrind; then
  before=$(events); service_before=$(service_ticks); machine_before=$(machine_ticks)
  "$flexctl" --nats-url "$FLEXCORE__NATS__URL" bench commands "${bench_args[@]}"
  after=$(events); service_after=$(service_ticks); machine_after=$(machine_ticks)
  hz=$(getconf CLK_TCK)
  appended=$((after - before))
  awk -v s=$((service_after - service_before)) -v m=$((machine_after - machine_before)) -v n="$appended" -v hz="$hz" \
    'BEGIN { printf "cpu: %d events appended; flexcore-command %.1f µs per event, whole machine %.1f µs per event\n", n, s / hz / n * 1e6, m / hz / n * 1e6 }'
  exit 0
fi

echo "warm-up round" >&2
"$flexctl" --nats-url "$FLEXCORE__NATS__URL" bench commands "${bench_args[@]}" >/dev/null
callgrind_control -z "$service_pid" >/dev/null
before=$(events)
"$flexctl" --nats-url "$FLEXCORE__NATS__URL" bench commands "${bench_args[@]}"
# Let the relay publish the round's last events before counting stops.
sleep 2
callgrind_control -d "$service_pid" >/dev/null
after=$(events)
sleep 1
dump=$(ls "$work"/callgrind.out* | grep -v '\.out$' | sort | tail -1)
instructions=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
appended=$((after - before))
[[ -n ${CALLGRIND_OUT:-} ]] && cp "$dump" "$CALLGRIND_OUT"
echo "callgrind: $instructions instructions for $appended events appended: $((instructions / appended)) per event"
