#!/usr/bin/env bash
# Makes sure the services the tests need are running: PostgreSQL at 127.0.0.1:5432
# (user postgres, trust authentication). Installs it from Debian's packages when it is
# missing (needs root), starts the local cluster when it does not answer.
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
