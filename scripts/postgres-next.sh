#!/usr/bin/env bash
# A private PostgreSQL of the next supported major (17, from Debian trixie) for the test
# suite's third pass (scripts/test.sh), next to the host's PostgreSQL 15 (Debian 12).
#
#   scripts/postgres-next.sh start   # prints the URL: postgres://postgres@127.0.0.1:5437/postgres
#   scripts/postgres-next.sh stop
#   scripts/postgres-next.sh status
#
# Trixie's postgresql-17 needs glibc 2.38 (bookworm has 2.36), so it runs from a trixie root
# file system built once with debootstrap (about 2 minutes; reused afterwards, by every
# clone) in /var/lib/flexcore/pg-next/rootfs (outside the work tree: /proc is mounted
# there while it runs), in a chroot sharing the host's network: it listens on
# 127.0.0.1:$FLEXCORE_PG_NEXT_PORT (5437), trust authentication, a fresh cluster on every
# start (the tests create and drop their own databases). Needs root (debootstrap, chroot,
# mount; installs Debian's debootstrap if missing); reaches deb.debian.org only for the
# first build.
set -euo pipefail
cd "$(dirname "$0")/.."

MAJOR=17
PORT=${FLEXCORE_PG_NEXT_PORT:-5437}
BASE=${FLEXCORE_PG_NEXT_DIR:-/var/lib/flexcore/pg-next}
ROOT=$BASE/rootfs
MIRROR=${FLEXCORE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BIN=/usr/lib/postgresql/$MAJOR/bin
# Inside the chroot.
DATA=/var/lib/flexcore-pg/data
LOG=/var/lib/flexcore-pg/server.log

die() { echo "postgres-next: $*" >&2; exit 1; }

# The trixie root file system with postgresql-17, built into a temporary directory and
# renamed when complete, so an interrupted build is never mistaken for a finished one.
build_rootfs() {
  [ -x "$ROOT$BIN/postgres" ] && return 0
  [ "$(id -u)" = 0 ] || die "building the root file system needs root"
  if ! command -v debootstrap >/dev/null; then
    echo "postgres-next: installing debootstrap (Debian's package)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends debootstrap >/dev/null
  fi
  mkdir -p "$BASE"
  # One build at a time (two clones' test runs).
  exec 9>"$BASE/build.lock"
  flock 9
  [ -x "$ROOT$BIN/postgres" ] && return 0
  local tmp=$BASE/rootfs.partial
  unmount_all "$tmp"
  # Never delete through a mount a failed debootstrap left behind.
  if grep -q " $tmp/" /proc/mounts; then
    die "something is still mounted below $tmp: unmount it, then retry"
  fi
  rm -rf "$tmp"
  echo "postgres-next: building a trixie root file system with postgresql-$MAJOR in $ROOT (once)" >&2
  if ! debootstrap --variant=minbase --include=postgresql-$MAJOR trixie "$tmp" "$MIRROR" \
      >"$BASE/debootstrap.log" 2>&1; then
    tail -n 30 "$BASE/debootstrap.log" >&2
    die "debootstrap failed (log: $BASE/debootstrap.log)"
  fi
  # The package's own cluster (17/main, port 5432) is never started; drop it.
  rm -rf "$tmp/var/lib/postgresql/$MAJOR/main" "$tmp/etc/postgresql/$MAJOR/main"
  rm -f "$tmp"/var/cache/apt/archives/*.deb
  mv "$tmp" "$ROOT"
}

# Unmounts whatever start mounted below $1 (deepest first).
unmount_all() {
  local root=$1 m
  [ -d "$root" ] || return 0
  for m in dev/shm proc; do
    if mountpoint -q "$root/$m"; then
      umount "$root/$m" || umount -l "$root/$m"
    fi
  done
}

mount_all() {
  mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
  mkdir -p "$ROOT/dev/shm"
  # POSIX shared memory (Postgres's parallel query workers).
  mountpoint -q "$ROOT/dev/shm" || mount -t tmpfs -o mode=1777,size=256m shm "$ROOT/dev/shm"
  # debootstrap leaves the device nodes Postgres needs; make sure of them.
  local n
  for n in null zero random urandom; do
    [ -c "$ROOT/dev/$n" ] || die "$ROOT/dev/$n is missing"
  done
}

# Runs a command in the chroot as its postgres user (numeric ids: the host's postgres user
# is another one).
as_postgres() {
  local uid gid
  uid=$(awk -F: '$1 == "postgres" { print $3 }' "$ROOT/etc/passwd")
  gid=$(awk -F: '$1 == "postgres" { print $4 }' "$ROOT/etc/passwd")
  [ -n "$uid" ] || die "no postgres user in $ROOT/etc/passwd"
  chroot --userspec="$uid:$gid" "$ROOT" env -i HOME=/var/lib/postgresql LANG=C.UTF-8 \
    PATH=$BIN:/usr/bin:/bin "$@"
}

running() {
  [ -f "$ROOT$DATA/postmaster.pid" ] && as_postgres pg_ctl -D "$DATA" status >/dev/null 2>&1
}

start() {
  build_rootfs
  mount_all
  if running; then
    as_postgres pg_ctl -D "$DATA" -m fast -w stop >/dev/null
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    die "port $PORT is taken by another process (set FLEXCORE_PG_NEXT_PORT)"
  fi
  local uid
  uid=$(awk -F: '$1 == "postgres" { print $3 }' "$ROOT/etc/passwd")
  rm -rf "$ROOT/var/lib/flexcore-pg"
  mkdir -p "$ROOT/var/lib/flexcore-pg"
  chown "$uid" "$ROOT/var/lib/flexcore-pg"
  as_postgres initdb -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync \
    >"$ROOT/var/lib/flexcore-pg/initdb.log" 2>&1 \
    || { cat "$ROOT/var/lib/flexcore-pg/initdb.log" >&2; die "initdb failed"; }
  # Otherwise the defaults, as the host's server on 5432 has them (the first passes' one);
  # the socket in the chroot's /tmp.
  cat >>"$ROOT$DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '/tmp'
EOF
  if ! as_postgres pg_ctl -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null; then
    tail -n 30 "$ROOT$LOG" >&2
    die "PostgreSQL $MAJOR did not start"
  fi
  echo "postgres://postgres@127.0.0.1:$PORT/postgres"
}

stop() {
  if [ -x "$ROOT$BIN/postgres" ]; then
    if running; then
      as_postgres pg_ctl -D "$DATA" -m fast -w stop >/dev/null
    fi
    unmount_all "$ROOT"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if [ -x "$ROOT$BIN/postgres" ] && running; then
      as_postgres psql -h 127.0.0.1 -p "$PORT" -U postgres -Atc 'SHOW server_version'
    else
      echo "not running" >&2
      exit 3
    fi
    ;;
  build) build_rootfs ;;
  *) die "usage: $0 start|stop|status|build" ;;
esac
