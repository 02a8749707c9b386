#!/usr/bin/env bash
# Every goal of the performance pass (issue 21; docs/benchmarks.md), one build after the
# other, benchmark by benchmark (so the builds being compared run minutes apart, on the same
# machine state): each benchmark runs once per build before the next one starts.
#
#   scripts/bench-goals.sh [--only a,b,...] [--logs DIR] BUILD_DIR...
#
# A BUILD_DIR holds a release build laid out as target/ is: release/ (the service
# binaries, flexctl, flexcore-dev and the native plugin binaries, from `cargo build
# --release --workspace --bins`) and wasm32-wasip1/release/*.wasm (the modules of
# plugins/build.sh), and config/ (the commit's config directory: every process of that
# build's runs loads it, as FLEXCORE_CONFIG_DIR, since an older build refuses the keys a
# newer base.yaml has). A copy of those three keeps a build. The stacks are the scripts' own
# (scripts/bench-overhead.sh, bench-schedules.sh, bench-cold-start.sh: a fresh database and
# a private nats-server each), driven by FLEXCTL (default: the first BUILD_DIR's flexctl),
# except `pipeline`, whose sandbox is flexctl's own and so runs each build's flexctl.
#
# Benchmarks (--only picks some; default all, in this order):
#   pipeline   flexctl bench pipeline (wasm vs native, best of 3)
#   queries    bench queries, 64 clients, 20 s (pipeline.get and pipeline.list)
#   lag2000    bench lag --rate 2000, 30 s
#   lag5000    bench lag --rate 5000, 30 s
#   commands   bench commands, 64 clients, 20 s, then the raw INSERT ceiling the same way
#   schedules  bench schedules, 10,000 schedules firing in one minute
#   rebuild    bench rebuild --events 1000000 (audit, pipelines)
#   coldstart  bench cold-start --events 1000000 --schedules 10000
#
# Each run's whole output goes to DIR/<seq>-<benchmark>-<build n>.log (default: a new directory under
# /tmp); the figures' lines are printed as they come. Needs what those scripts need
# (Postgres at PGHOST/PGPORT, nats-server). About 15 minutes per build.
set -euo pipefail
usage() { sed -n '2,30p' "$0" >&2; exit 2; }
all=(pipeline queries lag2000 lag5000 commands schedules rebuild coldstart)
only=("${all[@]}")
logs=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --only) IFS=, read -r -a only <<<"$2"; shift ;;
    --logs) logs="$2"; shift ;;
    -*) usage ;;
    *) break ;;
  esac
  shift
done
[[ $# -ge 1 ]] || usage
builds=()
for dir in "$@"; do
  dir=$(cd "$dir" && pwd) || usage
  for b in flexcore-command flexcore-projection flexcore-scheduler flexcore-runner flexctl; do
    [[ -x $dir/release/$b ]] || { echo "no release/$b in $dir" >&2; exit 1; }
  done
  [[ -f $dir/config/base.yaml ]] || { echo "no config/base.yaml in $dir" >&2; exit 1; }
  builds+=("$dir")
done
for name in "${only[@]}"; do
  [[ " ${all[*]} " == *" $name "* ]] || { echo "unknown benchmark '$name' (${all[*]})" >&2; exit 2; }
done
export FLEXCTL=${FLEXCTL:-${builds[0]}/release/flexctl}
[[ -n $logs ]] || logs=$(mktemp -d /tmp/flexcore-goals.XXXXXX)
mkdir -p "$logs"
scripts=$(cd "$(dirname "$0")" && pwd)
echo "logs in $logs; driver $FLEXCTL; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $(date -u +%FT%TZ)"

# The lines of a run's output that hold its figures.
figures='records/s|native is|queries/s|pages/s|p50|p99|commands/s|raw|cpu:|fire lag|RSS|cpu during|dup|events/s|ready|replay|snapshot|publishes'

run() {
  local log=$1 name=$2 build=$3 bin=$3/release
  export FLEXCORE_CONFIG_DIR=$build/config
  case "$name" in
    pipeline) "$bin/flexctl" bench pipeline --target-dir "$build" ;;
    queries) "$scripts/bench-overhead.sh" "$bin" --projection --bench queries -- --clients 64 --duration 20s --warmup 3s ;;
    lag2000) "$scripts/bench-overhead.sh" "$bin" --projection --bench lag -- --rate 2000 --duration 30s --warmup 3s ;;
    lag5000) "$scripts/bench-overhead.sh" "$bin" --projection --bench lag -- --rate 5000 --duration 30s --warmup 3s ;;
    commands) "$scripts/bench-overhead.sh" "$bin" -- --clients 64 --duration 20s --warmup 3s ;;
    schedules) "$scripts/bench-schedules.sh" "$bin" ;;
    rebuild) "$scripts/bench-overhead.sh" "$bin" --projection --bench rebuild -- --events 1000000 ;;
    coldstart) "$scripts/bench-cold-start.sh" "$bin" -- --events 1000000 --schedules 10000 ;;
  esac >"$log" 2>&1
}

seq=0
for name in "${only[@]}"; do
  seq=$((seq + 1))
  n=0
  for build in "${builds[@]}"; do
    n=$((n + 1))
    log="$logs/$seq-$name-$n.log"
    echo "== $name, build $n ($build), $(date -u +%T)"
    if run "$log" "$name" "$build"; then
      grep -E "$figures" "$log" | grep -v -e '^{' -e 'not ready yet' || true
    else
      echo "FAILED (rc $?): see $log"
      tail -5 "$log"
    fi
  done
done
