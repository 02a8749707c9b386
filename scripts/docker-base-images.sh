#!/usr/bin/env bash
# Local stand-ins for the public base images, built from Debian's packages only, for a
# machine whose Docker engine cannot pull from a registry (the CI machine):
#
#   flexcore-ci/debian:bookworm-slim   debian:bookworm-slim: a debootstrap --variant=minbase
#                                      bookworm root file system, imported
#   flexcore-ci/postgres:15            postgres:16's contract on Debian's postgresql-15
#                                      (tests/compose/images/postgres)
#   flexcore-ci/nats:2.9               nats:2.10-alpine's on Debian's nats-server 2.9.10
#                                      (tests/compose/images/nats)
#
#   sudo bash scripts/docker-base-images.sh     # builds the missing ones, prints the names
#
# An image that exists and was made from the same recipe (a label holding a hash of it) is
# kept: only a fresh machine, or a changed recipe, pays for debootstrap (~1 min) and the
# apt installs. Needs root (debootstrap), debootstrap, and deb.debian.org reachable from
# the host and from containers. FLEXCORE_DEBIAN_MIRROR picks another mirror.
# Use them with docker-compose.yml through tests/compose/standins.env (the variables the
# compose file and the Dockerfile take), as tests/compose/run.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_IMAGE=flexcore-ci/debian:bookworm-slim
POSTGRES_IMAGE=flexcore-ci/postgres:15
NATS_IMAGE=flexcore-ci/nats:2.9
MIRROR="${FLEXCORE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
LABEL=org.flexcore.ci.recipe

log() { printf 'docker-base-images.sh: %s\n' "$*" >&2; }

# True when IMAGE exists with recipe label HASH.
current() {
  local have
  have="$(docker image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null)" || return 1
  [ "$have" = "$2" ]
}

# ---------------------------------------------------------------------- debian base
# What the official slim image sets up beyond a minimal debootstrap: the bookworm,
# bookworm-updates and security suites, no documentation or manual pages installed by
# later apt-get installs, apt's caches cleaned after each install.
debian_sources="Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"
dpkg_excludes='path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
'
apt_clean='DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
'
# Bump when the steps below change in a way the strings above do not show.
debian_recipe="$(printf 'v1 minbase bookworm %s\n%s%s%s' "$MIRROR" "$debian_sources" "$dpkg_excludes" "$apt_clean" | sha256sum | cut -c1-16)"

if current "$DEBIAN_IMAGE" "$debian_recipe"; then
  log "$DEBIAN_IMAGE: up to date"
else
  if [ "$(id -u)" != 0 ]; then
    log "debootstrap needs root: run this script as root (or with sudo)"
    exit 1
  fi
  command -v debootstrap >/dev/null || { log "debootstrap is missing (apt-get install debootstrap)"; exit 1; }
  log "$DEBIAN_IMAGE: debootstrap --variant=minbase bookworm (about a minute)"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  rootfs="$work/rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" > "$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
  }
  rm -f "$rootfs/etc/apt/sources.list"
  printf '%s' "$debian_sources" > "$rootfs/etc/apt/sources.list.d/debian.sources"
  printf '%s' "$dpkg_excludes" > "$rootfs/etc/dpkg/dpkg.cfg.d/docker"
  printf '%s' "$apt_clean" > "$rootfs/etc/apt/apt.conf.d/docker-clean"
  echo 'APT::Install-Recommends "false";' > "$rootfs/etc/apt/apt.conf.d/docker-no-recommends"
  # What the slim image leaves out: documentation, caches and the package lists.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/tmp/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
  find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
  : > "$rootfs/etc/hostname"
  : > "$rootfs/etc/resolv.conf"
  tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    --change "LABEL $LABEL=$debian_recipe" \
    - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$work"
  trap - EXIT
  log "$DEBIAN_IMAGE: imported"
fi

# ---------------------------------------------------------------------- postgres, nats
# Built on the Debian base; its recipe is part of theirs, so a new base rebuilds them.
build_standin() {
  local image="$1" dir="$2" recipe
  recipe="$(printf '%s\n' "$debian_recipe" | cat - "$dir"/* | sha256sum | cut -c1-16)"
  if current "$image" "$recipe"; then
    log "$image: up to date"
    return
  fi
  log "$image: building from $dir"
  docker build --quiet --build-arg "BASE_IMAGE=$DEBIAN_IMAGE" --label "$LABEL=$recipe" \
    -t "$image" "$dir" >/dev/null
}
build_standin "$POSTGRES_IMAGE" tests/compose/images/postgres
build_standin "$NATS_IMAGE" tests/compose/images/nats

docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep '^flexcore-ci/' >&2
