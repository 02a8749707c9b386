#!/usr/bin/env bash
# Regenerates the newcomer's transcript in docs/flexctl.md (between the markers
# <!-- newcomer-transcript:begin --> and <!-- newcomer-transcript:end -->): starts a fresh
# `flexctl dev` stack of its own (a private nats-server on a free port, a fresh database,
# a state directory under /tmp), runs the first commands a newcomer runs, and writes each
# command with its real output. Ids, times and durations differ from run to run.
#
#   scripts/newcomer-transcript.sh            # builds what it needs first
#
# Needs Postgres where FLEXCORE__DATABASE__URL points (its server; the database
# flexcore_transcript there is dropped and made afresh), nats-server, and the wasm32-wasip1
# target for the example plugins. cli/flexctl's docs test checks that the transcript's
# commands are still valid flexctl command lines.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
doc=docs/flexctl.md
begin='<!-- newcomer-transcript:begin -->'
end='<!-- newcomer-transcript:end -->'
grep -qxF "$begin" "$doc" && grep -qxF "$end" "$doc" || {
    echo "newcomer-transcript.sh: $doc has no $begin … $end markers" >&2
    exit 1
}

cargo build --bins --quiet
bash plugins/build.sh >/dev/null
bin="${CARGO_TARGET_DIR:-$root/target}/debug"

server="${FLEXCORE__DATABASE__URL:-postgres://postgres@127.0.0.1:5432/flexcore}"
database_url="${server%/*}/flexcore_transcript"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
nats_url="nats://127.0.0.1:$(free_port)"
http_port="$(free_port)"
# The reader's checkout stands in a directory of its own, the stack's state in .flexcore/.
checkout="$(mktemp -d /tmp/flexcore-transcript-XXXXXX)"
state="$checkout/.flexcore"
mkdir "$state"
psql "${server%/*}/postgres" -qc 'DROP DATABASE IF EXISTS flexcore_transcript' >/dev/null

"$bin/flexctl" --nats-url "$nats_url" dev --database-url "$database_url" --state-dir "$state" \
    --admin-port 0 --http-port "$http_port" >"$state/dev.log" 2>&1 &
dev=$!
cleanup() {
    kill -INT "$dev" 2>/dev/null && wait "$dev" 2>/dev/null || true
    rm -rf "$checkout"
}
trap cleanup EXIT
for _ in $(seq 1 480); do
    grep -q 'try next' "$state/dev.log" && break
    if ! kill -0 "$dev" 2>/dev/null; then
        cat "$state/dev.log" >&2
        exit 1
    fi
    sleep 0.5
done
grep -q 'try next' "$state/dev.log" || { cat "$state/dev.log" >&2; echo "flexctl dev did not come up" >&2; exit 1; }

# The reader's second terminal, as `flexctl dev` tells them to set it up.
export PATH="$bin:$PATH" FLEXCORE__NATS__URL="$nats_url"
export FLEXCORE__NATS__NKEY_SEED_FILE="$state/keys/flexctl.nk" FLEXCORE__SECURITY__IDENTITIES_FILE="$state/keys/identities.json"
# No slot of the demo's schedule may start a run while the transcript starts its own.
flexctl schedule list --pipeline demo --output json | jq -r '.[].schedule_id' | xargs -r -n1 flexctl schedule pause >/dev/null

transcript="$checkout/transcript.md"
cd "$checkout"
cat >broken.yaml <<'EOF'
name: broken
owner: me
steps:
  - plugin: generator@0.1.0
    config: {records: many}
  - plugin: jsonl@0.1.0
EOF
show() {
    printf '$ %s\n' "$*" >>"$transcript"
    # Output as a reader sees it, tidied: no colours, the stack's paths as in the docs.
    (eval "$*" 2>&1 || true) | sed -e 's/\x1b\[[0-9;]*m//g' -e "s#$state#.flexcore#g" >>"$transcript"
    printf '\n' >>"$transcript"
}
{
    echo "$begin"
    echo
    echo '```console'
} >"$transcript"
show flexctl status
show flexctl plugin list
show flexctl pipeline list
show flexctl run start demo --follow
run_id="$(flexctl run list --pipeline demo --limit 1 --output json | jq -r '.[0].run_id')"
show flexctl run list --pipeline demo
show flexctl run show "$run_id"
show flexctl events tail --aggregate "$run_id" --all --count 4
show cat broken.yaml
show flexctl pipeline create -f broken.yaml
show flexctl run show 00000000-0000-7000-8000-000000000000 --output json
sed -i '$ d' "$transcript"
{
    echo '```'
    echo
    echo "$end"
} >>"$transcript"

# Replace what is between the markers (markers included) with the new transcript.
cd "$root"
python3 - "$doc" "$transcript" "$begin" "$end" <<'EOF'
import sys
doc, transcript, begin, end = sys.argv[1:]
text = open(doc).read()
head, rest = text.split(begin + "\n", 1)
_, tail = rest.split(end + "\n", 1)
open(doc, "w").write(head + open(transcript).read() + tail)
EOF
echo "newcomer-transcript.sh: $doc updated"
