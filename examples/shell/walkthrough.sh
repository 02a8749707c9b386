#!/usr/bin/env bash
# The walk-through of README.md as one script: create a pipeline from already registered
# plugins, run it, follow the run's events, with nothing but the `nats` CLI and `jq`.
#
#   examples/shell/walkthrough.sh [RECORDS]      # NATS_URL (default nats://127.0.0.1:4222)
#
# FlexCore's NATS requires an identity: NATS_NKEY names the application's seed file (e.g.
# .flexcore/keys/app.nk of `flexctl dev`); replies come to its inbox prefix _INBOX.app. The
# commands go unsigned (the nats CLI does not sign): they count as role client with actor
# "unsigned" (docs/security.md).
#
# Plugins as `flexctl dev` registers them: FLEXCORE_EXTRACTOR (generator@0.1.0),
# FLEXCORE_LOADER (jsonl@0.1.0, granted /output). FLEXCORE_TIMEOUT: seconds (60).
# Exit status: 0 run succeeded, 1 run failed/cancelled/timed out, 2 command rejected,
# 3 no answer in time.
set -euo pipefail

for tool in nats jq; do
    command -v "$tool" >/dev/null || { echo "walkthrough.sh: $tool is not installed (see README.md)" >&2; exit 3; }
done
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
records="${1:-100}"
extractor="${FLEXCORE_EXTRACTOR:-generator@0.1.0}"
loader="${FLEXCORE_LOADER:-jsonl@0.1.0}"
timeout="${FLEXCORE_TIMEOUT:-60}"

login=()
if [[ -n "${NATS_NKEY:-}" ]]; then
    login=(--nkey "$NATS_NKEY" --inbox-prefix "_INBOX.${FLEXCORE_IDENTITY:-app}")
fi

uuid() { cat /proc/sys/kernel/random/uuid 2>/dev/null || uuidgen | tr 'A-F' 'a-f'; }

# send SUBJECT BODY: prints the accepted reply; exits 2 on a rejection, 3 without a reply.
send() {
    local reply
    reply="$(nats request --raw "${login[@]}" "$1" "$2" 2>/dev/null || true)"
    if [[ -z "$reply" ]]; then
        echo "error: $1: no reply; is flexcore-command running at $NATS_URL?" >&2
        exit 3
    fi
    if [[ "$(jq -r .ok <<<"$reply")" != true ]]; then
        jq -r --arg s "$1" '"error: \($s) rejected (\(.error.code)): \(.error.message)"' <<<"$reply" >&2
        exit 2
    fi
    printf '%s\n' "$reply"
}

# 1. The pipeline: a unique name (names are unique among non-archived pipelines) and a
#    command_id, so resending this exact request cannot create a second one.
name="shell-example-$(uuid | cut -c1-8)"
loader_config='{}'
[[ "$loader" == jsonl@* ]] && loader_config='{"directory":"/output/shell-example"}'
body="$(jq -nc --arg id "$(uuid)" --arg name "$name" --arg e "$extractor" --arg l "$loader" \
    --argjson n "$records" --argjson lc "$loader_config" \
    '{command_id: $id, name: $name, owner: "shell-example",
      steps: [{plugin: $e, config: {records: $n, stream: "shell_example"}}, {plugin: $l, config: $lc}]}')"
pipeline_id="$(send flexcore.cmd.pipeline.create "$body" | jq -r .aggregate_id)"
echo "pipeline $name created: $pipeline_id"

# 2. Follow the run before it exists: we choose its id, and a JetStream subscription that
#    delivers all stored messages cannot miss an event, whenever it starts.
run_id="$(uuid)"
events="$(mktemp)"
nats subscribe "${login[@]}" --all --raw "flexcore.evt.run.$run_id.>" >"$events" 2>/dev/null &
follower=$!
trap 'kill "$follower" 2>/dev/null || true; rm -f "$events"' EXIT

# 3. Request the run.
send flexcore.cmd.run.request "$(jq -nc --arg id "$(uuid)" --arg p "$pipeline_id" --arg r "$run_id" \
    '{command_id: $id, pipeline_id: $p, run_id: $r}')" >/dev/null
echo "run $run_id requested"

# 4. Print each event type as it arrives; stop at the run's end. (A failure or timeout with
#    "final": false is followed by a retry.)
printed=0
deadline=$((SECONDS + timeout))
while ((SECONDS < deadline)); do
    mapfile -t seen < <(jq -R -c 'fromjson? // empty' "$events")
    for event in "${seen[@]:printed}"; do
        type="$(jq -r .type <<<"$event")"
        echo "$type"
        case "$type" in
            run.succeeded)
                jq -r '"run.succeeded: \([.data.counters[]] | add // 0) records \(.data.counters | tojson)"' <<<"$event"
                exit 0 ;;
            run.cancelled)
                jq -r '"run.cancelled: \(.data.reason // "no reason given")"' <<<"$event" >&2
                exit 1 ;;
            run.failed | run.timed_out)
                if [[ "$(jq -r .data.final <<<"$event")" == true ]]; then
                    jq -c '.data.error // .data.reason' <<<"$event" >&2
                    exit 1
                fi
                echo "  attempt $(jq -r .data.attempt <<<"$event") ended, a retry follows" ;;
        esac
    done
    printed=${#seen[@]}
    sleep 0.5
done
echo "error: run $run_id did not finish within $timeout s" >&2
exit 3
