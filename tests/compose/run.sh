#!/usr/bin/env bash
# The compose test: the repository's docker-compose.yml and Dockerfile, really started.
#
#   bash tests/compose/run.sh                    # the debug binaries (cargo build, then the test)
#   bash tests/compose/run.sh --no-build         # CI (scripts/test.sh): the debug binaries the
#                                                # test runs left in target/debug, as they are
#   bash tests/compose/run.sh --release          # the release image (builds it: ~25 min here)
#
# 1. the local stand-ins for the public base images (scripts/docker-base-images.sh; kept
#    when they exist), the binaries split from their debug info (scripts/dist.sh), the
#    project image built by `docker compose build` from them (BINARIES=prebuilt);
# 2. `docker compose up -d --wait` under a project name and host ports of its own (the
#    machine's own NATS and Postgres keep 4222 and 5432), timed;
# 3. the example plugins registered with `docker compose run --rm flexctl`, the demo
#    pipeline (examples/demo.yaml, without its schedule) created and run to success by
#    flexctl on the host with the flexctl identity's seed copied out of the keys volume,
#    its 10,000 records found in the runner's output file;
# 4. an API key (role operator) from `docker compose run --rm api-key create`, then over
#    HTTP through the gateway: status, a run started and followed to success; without a
#    key 401, creating a pipeline as operator 403;
# 5. `--scale runner=3`: three runners heard (flexctl status);
# 6. `docker compose restart command` (the relay leader): healthy again, a run succeeds;
# 7. every FlexCore container: a non-root user, a read-only root file system (a write to /
#    fails, one to /tmp works);
# 8. `docker compose down -v`: nothing of the project left.
#
# On failure: the compose logs; always: the stack and its volumes removed.
# Needs a Docker engine with Compose v2 and buildx (.ci/run installs them:
# scripts/docker-plugins.sh), root for debootstrap on the first run, and deb.debian.org.
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=dev
build_binaries=1
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --release) profile=release; shift ;;
    --no-build) build_binaries=0; shift ;;
    *) echo "run.sh: unknown argument $1 (--profile NAME, --release, --no-build)" >&2; exit 2 ;;
  esac
done
case "$profile" in dev | debug) out_dir=debug ;; *) out_dir="$profile" ;; esac

log() { printf '[compose-test %4ss] %s\n' "$SECONDS" "$*"; }
fail() { log "FAIL: $*"; exit 1; }
# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 1
  done
}
# A free port below Linux's ephemeral range (32768 and up), where no test's bind-to-0 or
# outgoing connection can take it between this check and Docker binding it.
free_port() {
  python3 - <<'PY'
import random, socket
for port in random.sample(range(20000, 32000), 200):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    print(port)
    break
else:
    raise SystemExit("no free port in 20000-31999")
PY
}

docker info >/dev/null 2>&1 || fail "no Docker engine reachable (docker info)"
docker compose version >/dev/null 2>&1 || fail "no Compose v2 (bash scripts/docker-plugins.sh)"

log "base images (scripts/docker-base-images.sh)"
bash scripts/docker-base-images.sh
log "binaries (scripts/dist.sh --profile $profile)"
if [ "$build_binaries" = 1 ]; then
  bash scripts/dist.sh --profile "$profile" 2>&1 | grep -v '^ *\(Compiling\|Finished\)' || true
else
  bash scripts/dist.sh --profile "$profile" --no-build
fi
dist="target/dist/$out_dir"
[ -x "$dist/bin/flexctl" ] || fail "$dist/bin/flexctl is missing"

project="flexcore-ci-$$"
export FLEXCORE_IMAGE="flexcore-ci/flexcore:compose-test-$out_dir"
export FLEXCORE_DIST="$dist"
FLEXCORE_NATS_PORT="$(free_port)"
FLEXCORE_GATEWAY_PORT="$(free_port)"
while [ "$FLEXCORE_GATEWAY_PORT" = "$FLEXCORE_NATS_PORT" ]; do FLEXCORE_GATEWAY_PORT="$(free_port)"; done
export FLEXCORE_NATS_PORT FLEXCORE_GATEWAY_PORT
compose=(docker compose --env-file tests/compose/standins.env -p "$project")
scratch="$(mktemp -d)"

cleanup() {
  local rc=$?
  trap - EXIT
  if [ "$rc" -ne 0 ]; then
    log "failed (exit $rc): the stack's state and logs follow"
    [ ! -s "$scratch/compose-run.log" ] || tail -n 40 "$scratch/compose-run.log"
    "${compose[@]}" ps -a || true
    "${compose[@]}" logs --no-color --timestamps --tail 150 || true
  fi
  "${compose[@]}" --profile tools down -v --remove-orphans --timeout 20 >/dev/null 2>&1 || true
  rm -rf "$scratch"
  exit "$rc"
}
trap cleanup EXIT
# `docker compose run --rm -T`, its progress lines kept for a failure's report.
crun() { "${compose[@]}" run --rm -T "$@" 2>>"$scratch/compose-run.log"; }

log "image $FLEXCORE_IMAGE (docker compose build, BINARIES=prebuilt from $dist)"
previous="$(docker image inspect -f '{{.Id}}' "$FLEXCORE_IMAGE" 2>/dev/null || true)"
"${compose[@]}" build --quiet command
current_image="$(docker image inspect -f '{{.Id}}' "$FLEXCORE_IMAGE")" || fail "compose build made no $FLEXCORE_IMAGE"
# CI runs on the same machine every time: the image a new build replaced goes, and the
# build cache is trimmed to a few GB (each build adds its binaries' layer).
if [ -n "$previous" ] && [ "$previous" != "$current_image" ]; then
  docker image rm "$previous" >/dev/null 2>&1 || true
fi
docker builder prune -f --keep-storage 4GB >/dev/null 2>&1 || true

log "up -d --wait (project $project, NATS on 127.0.0.1:$FLEXCORE_NATS_PORT, gateway on 127.0.0.1:$FLEXCORE_GATEWAY_PORT)"
started=$SECONDS
start_ns=$(date +%s%N)
"${compose[@]}" up -d --wait --quiet-pull 2>&1 | tail -n 3
ready_ms=$((($(date +%s%N) - start_ns) / 1000000))
log "stack ready in $((ready_ms / 1000)).$(printf '%03d' $((ready_ms % 1000))) s (docker compose up -d --wait)"
for service in nats postgres command projection scheduler runner gateway; do
  [ "$("${compose[@]}" ps --status running -q "$service" | wc -l)" -ge 1 ] || fail "$service is not running"
done

# --- the demo pipeline from the host ----------------------------------------------------
log "plugins registered (docker compose run --rm flexctl plugin register)"
# The runner's only writable directory is its /tmp; the jsonl loader's /output is there.
for spec in generator:extractor: mapper:transformer: jsonl:loader:dir:/tmp:/output:rw discard:loader:; do
  name="${spec%%:*}"
  rest="${spec#*:}"
  kind="${rest%%:*}"
  grant="${rest#*:}"
  args=(plugin register "/usr/share/flexcore/plugins/$name.wasm" --name "$name" --version 0.1.0
    --kind "$kind" --config-schema "/src/plugins/$name/config.schema.json"
    --limit memory=256MiB --limit timeout=10m)
  [ -z "$grant" ] || args+=(--grant "$grant")
  crun -v "$PWD/plugins:/src/plugins:ro" flexctl "${args[@]}" >/dev/null \
    || fail "plugin register $name"
done

log "flexctl on the host, as the flexctl identity (its seed copied out of the keys volume)"
crun --no-deps identities 'cat /keys/flexctl.nk' > "$scratch/flexctl.nk"
crun --no-deps identities 'cat /keys/identities.json' > "$scratch/identities.json"
chmod 0600 "$scratch/flexctl.nk"
grep -q '^S' "$scratch/flexctl.nk" || fail "no NKey seed copied out of the keys volume"
flexctl() {
  FLEXCORE__NATS__URL="nats://127.0.0.1:$FLEXCORE_NATS_PORT" \
    FLEXCORE__NATS__NKEY_SEED_FILE="$scratch/flexctl.nk" \
    FLEXCORE__SECURITY__IDENTITIES_FILE="$scratch/identities.json" \
    "$dist/bin/flexctl" "$@"
}
# Without its schedule: a slot firing mid-test would race the runs started here.
sed '/^schedules:/,$d' examples/demo.yaml > "$scratch/demo.yaml"
flexctl pipeline create -f "$scratch/demo.yaml" >/dev/null || fail "pipeline create demo"
flexctl run start demo --follow --timeout 3m --output json > "$scratch/run1.json" \
  || fail "the demo run did not succeed: $(cat "$scratch/run1.json")"
log "demo run succeeded: $(jq -c '{state, seconds}' "$scratch/run1.json" 2>/dev/null || cat "$scratch/run1.json")"
written="$("${compose[@]}" exec -T runner sh -c 'cat /tmp/demo/* | wc -l')"
[ "$written" -eq 10000 ] || fail "the jsonl loader wrote $written records, not 10000"
log "10000 records in the runner's /tmp/demo (the loader's /output/demo)"

# --- the HTTP gateway ---------------------------------------------------------------------
log "HTTP API through the gateway, with a key from docker compose run --rm api-key create"
api="http://127.0.0.1:$FLEXCORE_GATEWAY_PORT/api/v1/flexcore"
key="$(crun api-key create ci --role operator --output json | jq -r .key)"
[ -n "$key" ] && [ "$key" != null ] || fail "api-key create printed no key"
auth=(-H "Authorization: Bearer $key")
unauthorised="$(curl -s -o /dev/null -w '%{http_code}' "$api/status")"
[ "$unauthorised" = 401 ] || fail "GET /status without a key: $unauthorised, not 401"
# The gateway re-reads the keys file within 2 s.
wait_for 30 curl -fsS -o "$scratch/status.json" "${auth[@]}" "$api/status" || fail "GET /status with the key"
log "GET /status: $(jq -c '{command: .command.up, projection: .projection.up, runners: (.runners | length)}' "$scratch/status.json")"
# Role operator runs pipelines but may not create them: flexctl (role admin) does.
http_demo='{"name": "http-demo", "owner": "ci", "steps": [{"plugin": "generator@0.1.0", "config": {"records": 1000}}, {"plugin": "discard@0.1.0"}]}'
forbidden="$(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" -H 'Content-Type: application/json' -d "$http_demo" "$api/pipelines")"
[ "$forbidden" = 403 ] || fail "POST /pipelines as role operator: $forbidden, not 403"
printf 'name: http-demo\nowner: ci\nsteps:\n  - plugin: generator@0.1.0\n    config: {records: 1000}\n  - plugin: discard@0.1.0\n' \
  > "$scratch/http-demo.yaml"
flexctl pipeline create -f "$scratch/http-demo.yaml" >/dev/null || fail "pipeline create http-demo"
pipeline_listed() {
  curl -fsS "${auth[@]}" "$api/pipelines?limit=100" > "$scratch/pipelines.json" || return 1
  pipeline="$(jq -r '.items[] | select(.name == "http-demo") | .pipeline_id' "$scratch/pipelines.json")"
  [ -n "$pipeline" ]
}
wait_for 30 pipeline_listed || fail "GET /pipelines does not list http-demo: $(cat "$scratch/pipelines.json")"
run_over_http() {
  local run
  run="$(curl -fsS -X POST "${auth[@]}" -H "Idempotency-Key: compose-test-$1" "$api/pipelines/$pipeline/execute" | jq -r .aggregate_id)"
  [ -n "$run" ] && [ "$run" != null ] || fail "POST /pipelines/$pipeline/execute gave no run"
  run_state() {
    curl -fsS "${auth[@]}" "$api/runs/$run" > "$scratch/run.json" 2>/dev/null || return 1
    case "$(jq -r .state "$scratch/run.json")" in succeeded | failed | cancelled | timed_out) return 0 ;; *) return 1 ;; esac
  }
  wait_for 120 run_state || fail "run $run over HTTP did not end: $(cat "$scratch/run.json" 2>/dev/null)"
  [ "$(jq -r .state "$scratch/run.json")" = succeeded ] || fail "run $run over HTTP: $(cat "$scratch/run.json")"
  log "run $run over HTTP: $(jq -c '{state, records_total}' "$scratch/run.json")"
}
run_over_http first

# --- scale, restart -----------------------------------------------------------------------
log "up -d --wait --scale runner=3"
"${compose[@]}" up -d --wait --scale runner=3 2>&1 | tail -n 1
[ "$("${compose[@]}" ps --status running -q runner | wc -l)" -eq 3 ] || fail "not three runner containers"
three_runners() {
  flexctl status --output json > "$scratch/status-cli.json" 2>/dev/null || return 1
  [ "$(jq '.runners | length' "$scratch/status-cli.json")" -eq 3 ]
}
wait_for 60 three_runners || fail "flexctl status does not see three runners: $(jq -c .runners "$scratch/status-cli.json" 2>/dev/null)"
log "flexctl status: three runners, $(jq -c '[.runners[] | .slots // .capacity // empty]' "$scratch/status-cli.json") slots"

log "docker compose restart command (the relay leader)"
command_id="$("${compose[@]}" ps -q command)"
started_at="$(docker inspect -f '{{.State.StartedAt}}' "$command_id")"
"${compose[@]}" restart command >/dev/null
[ "$(docker inspect -f '{{.State.StartedAt}}' "$command_id")" != "$started_at" ] || fail "the command container was not restarted"
healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$command_id")" = healthy ]; }
wait_for 90 healthy || fail "command is not healthy after its restart"
flexctl run start demo --follow --timeout 3m --output json > "$scratch/run2.json" \
  || fail "a run after the restart did not succeed: $(cat "$scratch/run2.json")"
run_over_http after-restart
log "runs succeed after the restart"

# --- non-root, read-only ------------------------------------------------------------------
containers=()
for service in command projection scheduler runner gateway; do
  mapfile -t ids < <("${compose[@]}" ps -q "$service")
  [ "${#ids[@]}" -ge 1 ] || fail "no $service container"
  containers+=("${ids[@]}")
done
for id in "${containers[@]}"; do
  name="$(docker inspect -f '{{.Name}}' "$id")"
  [ "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$id")" = true ] || fail "$name: root file system not read-only"
  uid="$(docker exec "$id" id -u)"
  [ -n "$uid" ] && [ "$uid" != 0 ] || fail "$name runs as uid '$uid'"
  if docker exec "$id" sh -c ': > /compose-test-probe' 2>/dev/null; then
    fail "$name: writing to / succeeded"
  fi
  docker exec "$id" sh -c ': > /tmp/compose-test-probe' || fail "$name: /tmp is not writable (the probe itself is broken)"
done
log "${#containers[@]} FlexCore containers: non-root users, read-only root file systems"

# --- down -----------------------------------------------------------------------------------
log "down -v"
"${compose[@]}" --profile tools down -v --remove-orphans --timeout 20 >/dev/null 2>&1
left="$(docker ps -aq --filter "label=com.docker.compose.project=$project") $(docker volume ls -q --filter "label=com.docker.compose.project=$project")"
[ -z "${left// /}" ] || fail "left after down -v: $left"
log "passed in ${SECONDS} s (stack up to down: $((SECONDS - started)) s; ready in $((ready_ms / 1000)).$(printf '%03d' $((ready_ms % 1000))) s)"
