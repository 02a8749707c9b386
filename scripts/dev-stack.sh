# Sourced by the benchmark scripts: start_dev_stack LOG FLEXCTL_ARGS... runs
# `$bin/flexctl FLEXCTL_ARGS` (a `flexctl dev`) in the background, its output in LOG, sets
# $dev to its pid and waits until the stack is up (at most 5 minutes; on failure it shows
# the log and exits). The caller stops it: kill -INT "$dev".
start_dev_stack() {
  local log=$1
  shift
  "$bin/flexctl" "$@" >"$log" 2>&1 &
  dev=$!
  for _ in $(seq 1 300); do
    grep -q "try next" "$log" && return 0
    kill -0 "$dev" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 1
  done
  tail -50 "$log"
  echo "the stack did not come up in 5 minutes" >&2
  exit 1
}
