#!/usr/bin/env bash
# The shippable binary: builds `flexcore`, the multi-call binary holding the five services
# and flexctl (services/multicall; and the example plugins), then splits its debug info
# off (GNU objcopy), so that
#
#   target/dist/<profile>/bin/flexcore          stripped of debug info (symbols kept, so
#                                               backtraces still name functions), with a
#                                               .gnu_debuglink to its debug file
#   target/dist/<profile>/bin/<program>         a link to it per program (flexcore-command,
#                                               flexcore-projection, flexcore-scheduler,
#                                               flexcore-runner, flexcore-gateway, flexctl)
#   target/dist/<profile>/plugins/<name>.wasm   the example plugins (not the test-only
#                                               misbehave and leaky)
#   target/dist-debuginfo/<profile>/<binary>.debug
#                                               the debug info, for gdb/perf/addr2line:
#                                               put it beside the binary or under
#                                               /usr/lib/debug/<binary's directory>/
#
#   bash scripts/dist.sh                       # release profile (what the image ships)
#   bash scripts/dist.sh --profile dev         # the debug build the tests use (CI's image)
#   bash scripts/dist.sh --no-build            # split what target/<profile> already holds
#
# The Dockerfile's prebuilt stage takes target/dist/<profile>/ (build arg DIST); the debug
# files are outside target/dist and outside the build context (.dockerignore).
# Build on Debian 12 (bookworm): the binaries link the host's glibc, and the image's base
# is bookworm.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --profile=*) profile="${1#--profile=}"; shift ;;
    --no-build) build=0; shift ;;
    *) echo "dist.sh: unknown argument $1 (--profile NAME, --no-build)" >&2; exit 2 ;;
  esac
done
# Cargo's output directory for the profile.
case "$profile" in
  dev | debug) profile=dev; out_dir=debug ;;
  *) out_dir="$profile" ;;
esac

binaries=(flexcore)
programs=(flexcore-command flexcore-projection flexcore-scheduler flexcore-runner flexcore-gateway flexctl)
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"

if [ "$build" = 1 ]; then
  cargo build --locked --profile "$profile" -p flexcore-multicall --bin flexcore
  bash plugins/build.sh --locked >/dev/null
fi

dist="$target_dir/dist/$out_dir"
debuginfo="$target_dir/dist-debuginfo/$out_dir"
rm -rf "$dist"
mkdir -p "$dist/bin" "$dist/plugins" "$debuginfo"
for binary in "${binaries[@]}"; do
  built="$target_dir/$out_dir/$binary"
  [ -x "$built" ] || { echo "dist.sh: $built is missing (run without --no-build)" >&2; exit 1; }
  objcopy --only-keep-debug "$built" "$debuginfo/$binary.debug"
  chmod 0644 "$debuginfo/$binary.debug"
  # The debuglink names the debug file and holds its CRC (gdb checks it).
  objcopy --strip-debug --add-gnu-debuglink="$debuginfo/$binary.debug" "$built" "$dist/bin/$binary"
  chmod 0755 "$dist/bin/$binary"
done
for program in "${programs[@]}"; do
  ln -s flexcore "$dist/bin/$program"
done
shipped=0
for wasm in "$target_dir"/plugins/*.wasm; do
  [ -e "$wasm" ] || continue
  case "$(basename "$wasm")" in
    misbehave.wasm | leaky.wasm) ;;
    *) install -m 0644 "$wasm" "$dist/plugins/"; shipped=$((shipped + 1)) ;;
  esac
done
[ "$shipped" -gt 0 ] || { echo "dist.sh: no plugins in $target_dir/plugins (plugins/build.sh)" >&2; exit 1; }
du -sh "$dist/bin" "$dist/plugins" "$debuginfo" >&2
