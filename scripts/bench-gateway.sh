#!/usr/bin/env bash
# The HTTP gateway's cost, measured on a whole local stack: `flexctl dev` (release
# binaries; a private nats-server, the local Postgres, every service and the gateway,
# anonymous callers as admin on 127.0.0.1 only), then
#
#   1. the gateway's idle RSS;
#   2. `flexctl bench http`: pipeline pause/resume straight over NATS, the same through the
#      gateway, then GET /pipelines/{id}, 64 clients (keep-alive connections over HTTP);
#   3. with `oha` on PATH (cargo install oha): GET /pipelines/{id} once more, from oha;
#   4. the gateway's RSS after the load, and its own time per request over the whole run
#      (flexcore_http_gateway_own_seconds from its /metrics: each request's time in the
#      gateway less its waits on the services; no load generator in it).
#
#   scripts/bench-gateway.sh [BENCH ARGS]     (default: --clients 64 --duration 20s --warmup 3s)
#
# Needs Postgres at FLEXCORE__DATABASE__URL (default postgres://postgres@127.0.0.1:5432/
# flexcore_bench_gateway), nats-server, and the release build (scripts/dev.sh builds it, or
# cargo build --release --bins). Used for docs/benchmarks.md ("HTTP gateway").
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/dev-stack.sh
bin=target/release
state=$(mktemp -d)
port=${FLEXCORE_BENCH_HTTP_PORT:-18080}
nats_port=${FLEXCORE_BENCH_NATS_PORT:-14333}
admin_port=${FLEXCORE_BENCH_ADMIN_PORT:-19281}
db=${FLEXCORE__DATABASE__URL:-postgres://postgres@127.0.0.1:5432/flexcore_bench_gateway}
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(--clients 64 --duration 20s --warmup 3s)
bash plugins/build.sh >/dev/null
# One caller (anonymous) makes every request: the per-caller rate limit would measure
# itself, so it is off here (0).
export FLEXCORE__GATEWAY__RATE_LIMIT_PER_SECOND=0
dev=
trap '[[ -z $dev ]] || { kill -INT $dev 2>/dev/null; wait $dev 2>/dev/null; }; rm -rf "$state"' EXIT
start_dev_stack "$state/dev.log" --nats-url "nats://127.0.0.1:$nats_port" dev --database-url "$db" \
  --state-dir "$state" --bin-dir "$bin" --plugins-dir target/plugins --no-demo \
  --http-port "$port" --admin-port "$admin_port" --anonymous-role admin
gateway=$(pgrep -f "$bin/flexcore-gateway" | head -n1)
rss() { awk '/VmRSS/ {printf "%.1f MB", $2/1024}' "/proc/$1/status"; }
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
sleep 5
echo "gateway idle RSS: $(rss "$gateway")"
export FLEXCORE__NATS__NKEY_SEED_FILE="$state/keys/flexctl.nk" FLEXCORE__SECURITY__IDENTITIES_FILE="$state/keys/identities.json"
"$bin/flexctl" --nats-url "nats://127.0.0.1:$nats_port" bench http --url "http://127.0.0.1:$port" "${args[@]}"
if command -v oha >/dev/null 2>&1; then
  api="http://127.0.0.1:$port/api/v1/flexcore"
  # A pipeline of the bench (archived at its end; still readable).
  pipeline=$(curl -s "$api/pipelines?limit=1&state=archived" | sed -n 's/.*"pipeline_id":"\([0-9a-f-]*\)".*/\1/p' | head -n1)
  echo "oha: GET /pipelines/{id}, 64 connections, 20 s"
  oha -z 20s -c 64 --no-tui "$api/pipelines/$pipeline" | sed -n -e '/Summary/,/Size\/request/p' -e '/Response time distribution/,/99.90%/p' -e '/Status code distribution/,$p'
fi
echo "gateway RSS after the load: $(rss "$gateway")"
# The gateway is the fifth service flexctl dev starts: its admin port is the fifth.
curl -s "http://127.0.0.1:$((admin_port + 4))/metrics" | python3 -c '
import re, sys
buckets, total, count = [], 0.0, 0
for line in sys.stdin:
    m = re.match(r"flexcore_http_gateway_own_seconds_bucket\{le=\"([^\"]+)\"\} (\d+)", line)
    if m:
        buckets.append((float("inf") if m[1] == "+Inf" else float(m[1]), int(m[2])))
    elif line.startswith("flexcore_http_gateway_own_seconds_sum "):
        total = float(line.split()[1])
    elif line.startswith("flexcore_http_gateway_own_seconds_count "):
        count = int(line.split()[1])
if count:
    p99 = next(le for le, n in buckets if n >= 0.99 * count)
    p50 = next(le for le, n in buckets if n >= 0.50 * count)
    print(f"gateway own time per request: {count} requests, mean {total / count * 1000:.3f} ms, p50 <= {p50 * 1000:g} ms, p99 <= {p99 * 1000:g} ms")
'

