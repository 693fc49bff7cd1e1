#!/usr/bin/env bash
# Builds PostgreSQL and Redis images from Debian packages, for machines that reach no image registry.
#
# The images honour the part of the official images' environment contract that Harbor relies on:
#   postgres: POSTGRES_USER (default postgres), POSTGRES_PASSWORD (scram) or
#             POSTGRES_HOST_AUTH_METHOD=trust, POSTGRES_DB (default: the user), port 5432,
#             logs "database system is ready to accept connections" once serving.
#   redis:    port 6379, no persistence, logs "Ready to accept connections".
#
# Idempotent: an image that already exists locally, or can be pulled, is left alone.
# Usage: scripts/offline-images.sh            (builds what is missing)
#        HARBOR_OFFLINE_POSTGRES_IMAGE / HARBOR_OFFLINE_REDIS_IMAGE override the tags built.
set -euo pipefail
# The engine the harness uses (testcontainers ignores `docker context`): DOCKER_HOST, else the
# default socket, whatever context the client has selected.
export DOCKER_CONTEXT=default

PG_IMAGE=${HARBOR_OFFLINE_POSTGRES_IMAGE:-harbor-offline/postgres:15-bookworm}
REDIS_IMAGE=${HARBOR_OFFLINE_REDIS_IMAGE:-harbor-offline/redis:7-bookworm}
BASE_IMAGE=harbor-offline/base:bookworm
SUITE=bookworm

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
can_pull() { timeout 20 docker pull -q "$1" >/dev/null 2>&1; }

# The harness prefers the pinned official tags; when they are here (or can be pulled), nothing is
# needed. Otherwise the offline tags the harness falls back to are built.
OFFICIAL_PG=postgres:16-alpine
OFFICIAL_REDIS=redis:7-alpine
need_pg=1; need_redis=1
if have_image "$PG_IMAGE" || have_image "$OFFICIAL_PG" || can_pull "$OFFICIAL_PG"; then need_pg=0; fi
if have_image "$REDIS_IMAGE" || have_image "$OFFICIAL_REDIS" || can_pull "$OFFICIAL_REDIS"; then need_redis=0; fi
if [ $need_pg = 0 ] && [ $need_redis = 0 ]; then
  echo "offline-images: PostgreSQL and Redis images present; nothing to do"
  exit 0
fi

if ! have_image "$BASE_IMAGE"; then
  command -v debootstrap >/dev/null || {
    echo "offline-images: debootstrap is missing; run: apt-get install -y debootstrap" >&2; exit 2; }
  rootfs=$(mktemp -d /tmp/harbor-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "offline-images: debootstrap $SUITE with postgresql-15 and redis-server (about a minute)"
  debootstrap --variant=minbase --include=postgresql-15,redis-server "$SUITE" "$rootfs" >/tmp/harbor-debootstrap.log 2>&1 || {
    echo "offline-images: debootstrap failed; see /tmp/harbor-debootstrap.log" >&2; exit 2; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import \
    -c 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE_IMAGE" >/dev/null
fi

ctx=$(mktemp -d /tmp/harbor-imgctx.XXXXXX)
trap 'rm -rf "$ctx" "${rootfs:-/nonexistent}"' EXIT

if [ $need_pg = 1 ]; then
  cat >"$ctx/postgres-entrypoint.sh" <<'SH'
#!/bin/sh
set -eu
PGDATA=${PGDATA:-/var/lib/postgresql/data}
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  auth=trust; pwopt=""
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    printf '%s\n' "$POSTGRES_PASSWORD" >/tmp/pwfile; chown postgres /tmp/pwfile
    auth=scram-sha-256; pwopt="--pwfile=/tmp/pwfile"
  fi
  [ "${POSTGRES_HOST_AUTH_METHOD:-}" = trust ] && auth=trust
  su postgres -c "initdb -D '$PGDATA' -U '$user' --auth-local=trust --auth-host=$auth -E UTF8 $pwopt" >/dev/null
  rm -f /tmp/pwfile
  echo "host all all 0.0.0.0/0 $auth" >>"$PGDATA/pg_hba.conf"
  echo "host all all ::/0 $auth" >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    su postgres -c "pg_ctl -D '$PGDATA' -o \"-c listen_addresses=''\" -w start" >/dev/null
    su postgres -c "psql -v ON_ERROR_STOP=1 -U '$user' -d postgres -c 'CREATE DATABASE \"$db\"'" >/dev/null
    su postgres -c "pg_ctl -D '$PGDATA' -m fast -w stop" >/dev/null
  fi
fi
exec su postgres -c "exec postgres -D '$PGDATA' -c listen_addresses='*' $*"
SH
  cat >"$ctx/Dockerfile.postgres" <<DOCKER
FROM $BASE_IMAGE
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 755 /usr/local/bin/docker-entrypoint.sh
ENV PGDATA=/var/lib/postgresql/data
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
DOCKER
  echo "offline-images: building $PG_IMAGE"
  docker build -q -f "$ctx/Dockerfile.postgres" -t "$PG_IMAGE" "$ctx" >/dev/null 2>&1 || \
    docker build -f "$ctx/Dockerfile.postgres" -t "$PG_IMAGE" "$ctx"
fi

if [ $need_redis = 1 ]; then
  cat >"$ctx/Dockerfile.redis" <<DOCKER
FROM $BASE_IMAGE
EXPOSE 6379
ENTRYPOINT ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
DOCKER
  echo "offline-images: building $REDIS_IMAGE"
  docker build -q -f "$ctx/Dockerfile.redis" -t "$REDIS_IMAGE" "$ctx" >/dev/null 2>&1 || \
    docker build -f "$ctx/Dockerfile.redis" -t "$REDIS_IMAGE" "$ctx"
fi
echo "offline-images: ready: $PG_IMAGE $REDIS_IMAGE"
