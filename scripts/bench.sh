#!/usr/bin/env bash
# Load benchmark of the release build, one run: /healthz against authenticated routes.
# Prints requests/s and p99 per route and each route's share of /healthz's throughput.
#   DURATION=20s CONNECTIONS=64 THREADS=2 ./scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
PORT=${PORT:-18080}
LOG_FILTER=${LOG_FILTER:-info}

scripts/services.sh
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked --quiet --bin d2-api --bin d2ctl

server=postgres://postgres@127.0.0.1:5432/postgres
db="d2_bench_$$"
psql -q "$server" -c "CREATE DATABASE $db" >/dev/null
work=$(mktemp -d)
cleanup() {
    [ -n "${api_pid:-}" ] && kill "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null
    psql -q "$server" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

export D2_ENV=production
export D2__DATABASE__URL="postgres://postgres@127.0.0.1:5432/$db"
export D2__CRYPTO__TOKEN_PEPPER=$(target/release/d2ctl generate-secret)
export D2__HTTP__ADDR="127.0.0.1:$PORT"
export D2__LOG__FILTER="$LOG_FILTER"
target/release/d2ctl migrate >/dev/null
token=$(target/release/d2ctl bootstrap 2>/dev/null)
target/release/d2-api > "$work/api.log" 2>&1 &
api_pid=$!
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

base="http://127.0.0.1:$PORT"
run() { # name, path, extra wrk args...
    local name=$1 path=$2
    shift 2
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$base$path" > "$work/$name.txt"
    local rps p50 p99 non2xx
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/$name.txt")
    p50=$(awk '$1 == "50%" {print $2}' "$work/$name.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$work/$name.txt")
    non2xx=$(awk '/Non-2xx/ {print $5}' "$work/$name.txt")
    printf '%-28s %12s req/s   p50 %-9s p99 %-9s non-2xx %s\n' "$name" "$rps" "$p50" "$p99" "${non2xx:-0}"
    echo "$rps" > "$work/$name.rps"
}

echo "d2-api release build, $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, log filter $LOG_FILTER"
run healthz /healthz
run accounts_me /v1/accounts/me -H "Authorization: Bearer $token"
healthz=$(cat "$work/healthz.rps")
me=$(cat "$work/accounts_me.rps")
awk -v a="$me" -v h="$healthz" 'BEGIN { printf "authenticated GET /v1/accounts/me reaches %.0f%% of /healthz throughput\n", 100 * a / h }'
