#!/bin/sh
# The stand-in postgres image's entrypoint (see the Dockerfile beside it): as root, own
# the data and socket directories and drop to the postgres user; on the first start (an
# empty PGDATA) create the cluster, the POSTGRES_USER superuser with POSTGRES_PASSWORD and
# the POSTGRES_DB database; then run the server on every interface.
set -eu

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 0700 "$PGDATA"
    chmod 2775 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "${1:-}" = postgres ]; then
    shift
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        : "${POSTGRES_PASSWORD:?is not set: the superuser needs a password (as with the official image)}"
        user="${POSTGRES_USER:-postgres}"
        db="${POSTGRES_DB:-$user}"
        scratch="$(mktemp -d)"
        printf '%s\n' "$POSTGRES_PASSWORD" > "$scratch/pw"
        initdb --username="$user" --pwfile="$scratch/pw" --encoding=UTF8 --locale=C.UTF-8 \
            --auth-local=trust --auth-host=scram-sha-256 -D "$PGDATA"
        rm -f "$scratch/pw"
        echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
        echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
        # A private server for the set-up: no TCP, its socket in a scratch directory, so
        # the health check (pg_isready on the usual socket) fails until the real one runs.
        pg_ctl -D "$PGDATA" -o "-c listen_addresses= -k $scratch" -w start
        if [ "$db" != postgres ]; then
            psql -v ON_ERROR_STOP=1 -h "$scratch" -U "$user" -d postgres \
                -c "CREATE DATABASE \"$db\""
        fi
        pg_ctl -D "$PGDATA" -m fast -w stop
        rm -rf "$scratch"
        echo "docker-entrypoint.sh: database $db and user $user created"
    fi
    exec postgres "$@"
fi
exec "$@"
