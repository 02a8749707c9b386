#!/usr/bin/env bash
# Builds every plugin under plugins/ for wasm32-wasip1 (release) and copies the modules
# to <target dir>/plugins/<name>.wasm, printing each path. Extra arguments go to cargo.
#
#   plugins/build.sh                 # all plugins
#   plugins/build.sh --locked        # e.g. in CI
#
# Honours CARGO_TARGET_DIR. The .wasm files stay under target/ (gitignored).
#
# The modules use WebAssembly SIMD (`+simd128`, which wasmtime enables by default), unless
# CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS is set (it replaces these flags; empty: none).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
triple=wasm32-wasip1

names=()
packages=()
for manifest in plugins/*/Cargo.toml; do
    dir="$(dirname "$manifest")"
    names+=("$(basename "$dir")")
    package="$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -n1)"
    if [[ -z "$package" ]]; then
        echo "build.sh: no package name in $manifest" >&2
        exit 1
    fi
    packages+=("$package")
done
if [[ ${#packages[@]} -eq 0 ]]; then
    echo "build.sh: no plugins found under plugins/" >&2
    exit 1
fi

args=()
for package in "${packages[@]}"; do
    args+=(-p "$package")
done
export CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS="${CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS--C target-feature=+simd128}"
cargo build --release --target "$triple" "${args[@]}" "$@"

mkdir -p "$target_dir/plugins"
for i in "${!packages[@]}"; do
    built="$target_dir/$triple/release/${packages[$i]}.wasm"
    if [[ ! -f "$built" ]]; then
        echo "build.sh: expected $built after the build" >&2
        exit 1
    fi
    dest="$target_dir/plugins/${names[$i]}.wasm"
    cp "$built" "$dest"
    echo "$dest"
done
