#!/usr/bin/env bash
# Makes sure the services the tests need are running: PostgreSQL at 127.0.0.1:5432
# (user postgres, trust authentication) and Redis at 127.0.0.1:6379. Installs them from
# Debian's packages when they are missing (needs root), starts them when they do not
# answer.
set -euo pipefail

pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1; then
    echo "services: installing PostgreSQL" >&2
    apt-get update -qq && apt-get install -y -qq postgresql postgresql-client >/dev/null
fi

if ! pg_ready; then
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    echo "services: starting PostgreSQL $version" >&2
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 60); do
        pg_ready && break
        sleep 0.5
    done
fi
pg_ready || { echo "services: PostgreSQL does not answer at 127.0.0.1:5432" >&2; exit 1; }
echo "services: PostgreSQL ready at 127.0.0.1:5432" >&2

# Redis at 127.0.0.1:6379, for the quotas shared across replicas (tests also start
# private redis-server processes on free ports, so the binary must be installed).
redis_ready() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

if ! command -v redis-server >/dev/null 2>&1; then
    echo "services: installing Redis" >&2
    apt-get update -qq && apt-get install -y -qq redis-server redis-tools >/dev/null
fi
if ! redis_ready; then
    echo "services: starting Redis" >&2
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 60); do
        redis_ready && break
        sleep 0.5
    done
fi
redis_ready || { echo "services: Redis does not answer at 127.0.0.1:6379" >&2; exit 1; }
echo "services: Redis ready at 127.0.0.1:6379" >&2
