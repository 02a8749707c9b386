#!/usr/bin/env bash
# The README's first command: builds every binary and the example plugins, then runs
# `flexctl dev` (a whole local FlexCore plus a demo; Ctrl-C stops it). Arguments go to
# flexctl dev, e.g. `scripts/dev.sh --exit-after-demo`.
#
# Uses Postgres and NATS if reachable at FLEXCORE__DATABASE__URL / FLEXCORE__NATS__URL
# (defaults postgres://postgres@127.0.0.1:5432/flexcore and nats://127.0.0.1:4222),
# otherwise starts private ones under .flexcore/ (initdb/pg_ctl and nats-server must be
# installed; flexctl says how if they are not).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip1 >/dev/null 2>&1 || rustup target list --installed | grep -qx wasm32-wasip1
echo "building the services, flexctl (with flexcore-dev, which runs flexctl dev) and the example plugins (release; the first build takes a few minutes)" >&2
cargo build --release --bins -p flexcore-command -p flexcore-projection -p flexcore-scheduler -p flexcore-runner -p flexcore-gateway -p flexctl -p flexcore-dev
bash plugins/build.sh >/dev/null
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/flexctl" dev --plugins-dir "$target_dir/plugins" "$@"
