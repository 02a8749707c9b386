#!/usr/bin/env bash
# Installs the Docker CLI plugins the compose test needs when they are missing: Compose v2
# (`docker compose`, with `up --wait`) and buildx (BuildKit builds; the 28.x client has no
# other builder). Debian 12 ships only Compose 1.29, so both come from Debian trixie's
# packages (docker-compose 2.26, docker-buildx 0.13: Go binaries needing only libc6 >=
# 2.34), downloaded and signature-checked by apt with a private state directory: the
# system's apt sources are not touched and nothing else from trixie is installed.
#
#   bash scripts/docker-plugins.sh            # installs into /usr/local/lib/docker/cli-plugins
#
# FLEXCORE_DOCKER_PLUGIN_DIR overrides the destination (e.g. ~/.docker/cli-plugins).
set -euo pipefail

dest="${FLEXCORE_DOCKER_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}"
missing=()
docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
docker buildx version >/dev/null 2>&1 || missing+=(docker-buildx)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
# apt fetches as the _apt user (unsandboxed, with a warning, if it cannot write there).
chmod 0755 "$work"
if id _apt >/dev/null 2>&1; then
  chown _apt "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
fi
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
  > "$work/sources.list"
apt_opts=(
  -o "Dir::Etc::SourceList=$work/sources.list"
  -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache"
  -o Dir::State::status=/dev/null
)
apt-get "${apt_opts[@]}" -q update >/dev/null
# `apt-get download` writes into the current directory.
(cd "$work/debs" && apt-get "${apt_opts[@]}" -q download "${missing[@]}" >/dev/null)
mkdir -p "$dest"
for package in "${missing[@]}"; do
  dpkg-deb -x "$work/debs/${package}"_*.deb "$work/x"
  plugin="$work/x/usr/libexec/docker/cli-plugins/$package"
  install -m 0755 "$plugin" "$dest/$package"
  echo "docker-plugins.sh: installed $dest/$package"
done
docker compose version
docker buildx version
