# Sourced by scripts/bench-overhead.sh, bench-schedules.sh and bench-cold-start.sh: the
# private stack one benchmark run needs, removed when the script exits — a fresh database
# and a nats-server of its own, with the identities flexctl generates and the streams
# `flexcore-command setup` creates. The sourcing script sets pg_host, pg_port, db, work,
# nats_port, flexctl and bin_dir first.

psql_() { psql -h "$pg_host" -p "$pg_port" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

# Processes to stop on exit, in the order they started (stopped in the reverse order, so
# nats-server, started first, goes last).
stack_pids=()
nats_pid=""
stack_cleanup() {
  # Every step runs whatever the one before returned (a killed process's status is not 0).
  set +e
  local i
  for ((i = ${#stack_pids[@]} - 1; i >= 0; i--)); do
    kill "${stack_pids[i]}" 2>/dev/null
    wait "${stack_pids[i]}" 2>/dev/null
  done
  psql_ -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
  rm -rf "$work"
}
trap stack_cleanup EXIT

stack_database() { psql_ -d postgres -c "CREATE DATABASE $db" >/dev/null; }

# The identities (keys in $work/keys) and a nats-server configuration admitting them;
# ARGS are added to its jetstream block (e.g. `max_file_store: 64GB`).
stack_identities() {
  "$flexctl" security init --dir "$work/keys" >/dev/null
  printf 'listen: "127.0.0.1:%s"\nmax_payload: 1MB\njetstream { store_dir: "%s"%s }\ninclude ./keys/nats-accounts.conf\n' \
    "$nats_port" "$work/nats" "${1:+, $1}" >"$work/nats.conf"
}

# Starts nats-server with ARGS (default: the configuration of stack_identities) and waits
# until it takes connections; its log if it died.
stack_nats() {
  [[ $# -gt 0 ]] || set -- -c "$work/nats.conf"
  nats-server "$@" >"$work/nats.log" 2>&1 &
  nats_pid=$!
  stack_pids+=("$nats_pid")
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && return 0
    kill -0 "$nats_pid" 2>/dev/null || { cat "$work/nats.log" >&2; exit 1; }
    sleep 0.1
  done
}

# The streams, created by the setup identity.
stack_setup() {
  FLEXCORE__NATS__NKEY_SEED_FILE="$work/keys/setup.nk" FLEXCORE__SECURITY__IDENTITIES_FILE="$work/keys/identities.json" \
    "$bin_dir/flexcore-command" setup >"$work/setup.log" 2>&1
}

# Waits until process PID has logged MARKER in LOG (at most 5 minutes); its log if it died.
wait_logged() {
  local log=$1 pid=$2 marker=$3
  for _ in $(seq 1 600); do
    grep -q "$marker" "$log" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.5
  done
  echo "$log: no '$marker' within 5 minutes" >&2
  exit 1
}
