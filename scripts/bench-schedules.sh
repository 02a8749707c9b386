#!/usr/bin/env bash
# The stack of docs/benchmarks.md "Scheduler" for one build, then a flexctl bench against it:
# a fresh database, a private nats-server with the identities flexctl generates (NKeys),
# `flexcore-command setup`, the build's flexcore-command and N flexcore-scheduler replicas
# (default config, each its own identity's seed), then `flexctl bench schedules`.
#
#   scripts/bench-schedules.sh BIN_DIR [--replicas N] [-- BENCH ARGS]
#
# BIN_DIR holds the build's flexcore-command and flexcore-scheduler (e.g. target/release);
# the driver is FLEXCTL (default: target/release/flexctl, with the flexcore-dev beside it),
# the same for every build compared. Bench arguments default to
# `--schedules 10000 --minutes 1`. Prints the bench's figures and the CPU seconds each
# process used during it. Needs Postgres at PGHOST/PGPORT (default 127.0.0.1:5432, user
# postgres, trust) and nats-server.
set -euo pipefail
usage() { sed -n '2,14p' "$0" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
bin_dir=$(cd "$1" && pwd) || usage
shift
replicas=1
bench_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --replicas) replicas="$2"; shift ;;
    --) shift; bench_args=("$@"); break ;;
    *) usage ;;
  esac
  shift
done
[[ ${#bench_args[@]} -gt 0 ]] || bench_args=(--schedules 10000 --minutes 1)

flexctl=${FLEXCTL:-$(pwd)/target/release/flexctl}
for b in flexcore-command flexcore-scheduler; do
  [[ -x $bin_dir/$b ]] || { echo "no $b in $bin_dir" >&2; exit 1; }
done
[[ -x $flexctl ]] || { echo "no flexctl at $flexctl (set FLEXCTL)" >&2; exit 1; }
pg_host=${PGHOST:-127.0.0.1}
pg_port=${PGPORT:-5432}
nats_port=${NATS_PORT:-4334}
db="flexcore_schedules_$$"
work=$(mktemp -d /tmp/flexcore-schedules.XXXXXX)
# shellcheck source=scripts/lib/bench-stack.sh
source "$(dirname "$0")/lib/bench-stack.sh"

stack_database
stack_identities
stack_nats

export FLEXCORE__DATABASE__URL="postgres://postgres@$pg_host:$pg_port/$db"
export FLEXCORE__NATS__URL="nats://127.0.0.1:$nats_port"
export FLEXCORE__TELEMETRY__LOG_FORMAT=json
export FLEXCORE__SECURITY__IDENTITIES_FILE="$work/keys/identities.json"
stack_setup

FLEXCORE__NATS__NKEY_SEED_FILE="$work/keys/command.nk" "$bin_dir/flexcore-command" >"$work/command.log" 2>&1 &
command_pid=$!
stack_pids+=("$command_pid")
wait_logged "$work/command.log" "$command_pid" 'serving commands'
scheduler_pids=()
for i in $(seq 1 "$replicas"); do
  FLEXCORE__NATS__NKEY_SEED_FILE="$work/keys/scheduler.nk" FLEXCORE__SCHEDULER__INSTANCE_ID="bench-$i" \
    "$bin_dir/flexcore-scheduler" >"$work/scheduler-$i.log" 2>&1 &
  scheduler_pids+=($!)
  stack_pids+=($!)
done
for i in $(seq 1 "$replicas"); do
  wait_logged "$work/scheduler-$i.log" "${scheduler_pids[$((i - 1))]}" 'scheduler started'
done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
c0=$(ticks "$command_pid"); s0=0; for p in "${scheduler_pids[@]}"; do s0=$((s0 + $(ticks "$p"))); done
n0=$(ticks "$nats_pid")
# CPU ticks of each process every half second, to show who used the CPU while a minute's
# slots fired (the seconds with the most command-service CPU are printed at the end).
(
  while sleep 0.5; do
    s=0; for p in "${scheduler_pids[@]}"; do s=$((s + $(ticks "$p"))); done
    echo "$(date +%s.%N) $(ticks "$command_pid") $s $(ticks "$nats_pid") $(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat)"
  done
) >"$work/cpu.log" 2>/dev/null &
sampler=$!
stack_pids+=("$sampler")
"$flexctl" --nats-url "$FLEXCORE__NATS__URL" --nkey-seed-file "$work/keys/flexctl.nk" \
  --identities-file "$work/keys/identities.json" bench schedules "${bench_args[@]}"
kill "$sampler" 2>/dev/null || true
c1=$(ticks "$command_pid"); s1=0; for p in "${scheduler_pids[@]}"; do s1=$((s1 + $(ticks "$p"))); done
n1=$(ticks "$nats_pid")
awk -v c=$((c1 - c0)) -v s=$((s1 - s0)) -v n=$((n1 - n0)) -v hz="$hz" \
  'BEGIN { printf "cpu during the bench (setup included): flexcore-command %.1f s, scheduler(s) %.1f s, nats-server %.1f s\n", c / hz, s / hz, n / hz }'
echo "busiest half-seconds (ticks of $hz/s): time command scheduler(s) nats-server whole-machine"
awk 'NR > 1 { printf "%s %d %d %d %d\n", $1, $2 - c, $3 - s, $4 - n, $5 - m } { c = $2; s = $3; n = $4; m = $5 }' "$work/cpu.log" |
  sort -k2 -n -r | head -8 | sort -k1
