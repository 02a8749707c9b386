#!/usr/bin/env bash
# The shell walk-through (examples/shell/README.md) as one script: create a pipeline from
# already registered plugins, run it and follow it to its end, with nothing but `flexctl`
# (--output json) and `jq` (Debian: `apt-get install jq`).
#
#   examples/shell/walkthrough.sh [RECORDS]
#
# flexctl reads where NATS is and who the operator is from FLEXCORE__NATS__URL,
# FLEXCORE__NATS__NKEY_SEED_FILE and FLEXCORE__SECURITY__IDENTITIES_FILE (`flexctl dev`
# prints the lines to export); FLEXCTL names the binary (default: flexctl on PATH).
#
# Plugins as `flexctl dev` registers them: FLEXCORE_EXTRACTOR (generator@0.1.0),
# FLEXCORE_LOADER (jsonl@0.1.0, granted /output). FLEXCORE_TIMEOUT: how long to follow
# the run (60s).
# Exit status: 0 run succeeded, 1 run failed/cancelled/timed out, 2 command rejected,
# 3 no answer in time.
set -euo pipefail

flexctl="${FLEXCTL:-flexctl}"
for tool in "$flexctl" jq; do
    command -v "$tool" >/dev/null || { echo "walkthrough.sh: $tool is not installed (see README.md)" >&2; exit 3; }
done
records="${1:-100}"
extractor="${FLEXCORE_EXTRACTOR:-generator@0.1.0}"
loader="${FLEXCORE_LOADER:-jsonl@0.1.0}"
timeout="${FLEXCORE_TIMEOUT:-60s}"
[[ "$timeout" =~ ^[0-9]+$ ]] && timeout="${timeout}s"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# call ARGS…: flexctl with JSON output; its result on stdout. A failure is a JSON error on
# stderr (docs/flexctl.md, "Errors"): its code decides the exit status.
call() {
    if "$flexctl" "$@" --output json 2>"$work/error"; then
        return 0
    fi
    local code
    code="$(jq -r '.error.code // "failed"' "$work/error" 2>/dev/null || echo failed)"
    jq -r '"error (\(.error.code)): \(.error.message)"' "$work/error" 2>/dev/null >&2 || cat "$work/error" >&2
    case "$code" in
        run_not_succeeded | follow_timed_out) exit 1 ;;
        unavailable) exit 3 ;;
        *) exit 2 ;;
    esac
}

# 1. The pipeline, as a pipeline file: a unique name (names are unique among non-archived
#    pipelines), one extractor, one loader.
name="shell-example-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
loader_config='{}'
[[ "$loader" == jsonl@* ]] && loader_config='{directory: /output/shell-example}'
cat >"$work/pipeline.yaml" <<EOF
name: $name
owner: shell-example
steps:
  - plugin: $extractor
    config: {records: $records, stream: shell_example}
  - plugin: $loader
    config: $loader_config
EOF
pipeline_id="$(call pipeline create -f "$work/pipeline.yaml" | jq -r .pipeline_id)"
echo "pipeline $name created: $pipeline_id"

# 2. Run it and follow it to its end. The idempotency key makes the request safe to
#    repeat: run again with the same key after "no answer", and it is the same run.
key="walkthrough-$name"
outcome="$(call run start "$name" --follow --timeout "$timeout" --idempotency-key "$key")"
run_id="$(jq -r .run_id <<<"$outcome")"
echo "run $run_id followed to its end"

# 3. Its events, from the event stream (JSON Lines: one event a line). The read model
#    says how many there are (its version) once it has caught up with the run's end.
state="$(jq -r .state <<<"$outcome")"
for _ in $(seq 1 50); do
    view="$(call run show "$run_id")"
    [[ "$(jq -r .state <<<"$view")" == "$state" ]] && break
    sleep 0.2
done
events="$(jq -r .aggregate_version <<<"$view")"
call events tail --aggregate "$run_id" --all --count "$events" | jq -r .type
jq -r '"run.\(.state): \([.counters[]] | add // 0) records \(.counters | tojson) (queued \(.queued_seconds) s, running \(.running_seconds) s)"' <<<"$outcome"
