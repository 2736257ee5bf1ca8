#!/usr/bin/env bash
# Telemetry benchmarks of the release build, against the local PostgreSQL and a private
# ClickHouse (scripts/clickhouse.sh):
#   1. ingest: wrk POSTs batches of 100 and of 1,000 distinct events from 16 connections;
#      every 202 means the batch was committed.
#   2. export: `d2-worker --once analytics-export` copies every stored event to ClickHouse.
#   3. metrics: summary, timeseries and top over one account's EVENTS events (default
#      1,000,000), answered by each of METRICS_STORES (default PostgreSQL, then ClickHouse);
#      then the totals of both stores over the same window, which must be equal.
# STORE=sqlite runs only the ingest step, on a SQLite file instead of the local PostgreSQL.
# INGEST=0 skips the ingest step (the fixture alone, for EVENTS=10000000).
#   DURATION=15s CONNECTIONS=16 EVENTS=1000000 STORE=postgres ./scripts/bench-events.sh
#   INGEST=0 EVENTS=10000000 METRICS_STORES=clickhouse ./scripts/bench-events.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}
EVENTS=${EVENTS:-1000000}
PORT=${PORT:-18081}
STORE=${STORE:-postgres}
INGEST=${INGEST:-1}
METRICS_STORES=${METRICS_STORES:-postgres clickhouse}
target="${CARGO_TARGET_DIR:-target}/release"

scripts/services.sh
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked --quiet --bin d2-api --bin d2-worker --bin d2ctl

server=postgres://postgres@127.0.0.1:5432/postgres
db="d2_bench_events_$$"
work=$(mktemp -d)
export CLICKHOUSE_DIR="$PWD/target/clickhouse-bench"
clickhouse=$(scripts/clickhouse.sh start)
stop_api() {
    if [ -n "${api_pid:-}" ]; then
        kill "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null || true
        api_pid=
    fi
}
cleanup() {
    stop_api
    scripts/clickhouse.sh stop
    [ "$STORE" = postgres ] && psql -q "$server" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
    rm -rf "$work" "$CLICKHOUSE_DIR"
}
trap cleanup EXIT

export D2_ENV=production
if [ "$STORE" = sqlite ]; then
    export D2__DATABASE__URL="sqlite://$work/d2.sqlite"
else
    psql -q "$server" -c "CREATE DATABASE $db" >/dev/null
    export D2__DATABASE__URL="postgres://postgres@127.0.0.1:5432/$db"
fi
export D2__DATABASE__POOL__MAX_SIZE=32
export D2__CRYPTO__TOKEN_PEPPER=$($target/d2ctl generate-secret)
export D2__CRYPTO__JWK_AES_KEY=$($target/d2ctl generate-aes-key)
export D2__HTTP__ADDR="127.0.0.1:$PORT"
export D2__LOG__FILTER=warn
# Room for the load: 1,000-event batches (about 200 KB), no ingest rate limit to speak of.
export D2__PLANS__TRIAL__MAX_BATCH_BYTES=1048576
export D2__PLANS__TRIAL__INGEST_INTERVAL_SECONDS=1
# The account quota out of the way: this measures the store, not the limit.
export D2__PLANS__TRIAL__INGEST_EVENTS_PER_MINUTE=1000000000
export D2__CLICKHOUSE__URL="$clickhouse"
export D2__CLICKHOUSE__DATABASE=d2_bench
export D2__WORKER__JOBS__ANALYTICS_EXPORT__BATCH_SIZE=${EXPORT_BATCH:-50000}
export D2__WORKER__JOBS__ANALYTICS_EXPORT__MAX_BATCHES=100000
$target/d2ctl migrate >/dev/null
ingest_token=$($target/d2ctl bootstrap --account-name ingest 2>/dev/null)
metrics_token=$($target/d2ctl bootstrap --account-name metrics 2>/dev/null)

base="http://127.0.0.1:$PORT"
start_api() {
    $target/d2-api > "$work/api.log" 2>&1 &
    api_pid=$!
    for _ in $(seq 1 100); do
        curl -fs "$base/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench-events: d2-api did not start" >&2
    tail -n 20 "$work/api.log" >&2
    exit 1
}
report() { # name, wrk output file, events per request
    local rps p50 p99 non2xx
    rps=$(awk '/Requests\/sec/ {print $2}' "$2")
    p50=$(awk '$1 == "50%" {print $2}' "$2")
    p99=$(awk '$1 == "99%" {print $2}' "$2")
    non2xx=$(awk '/Non-2xx/ {print $5}' "$2")
    if [ "$3" -gt 1 ]; then
        printf '%-26s %9s req/s %10.0f events/s   p50 %-9s p99 %-9s non-2xx %s\n' \
            "$1" "$rps" "$(awk -v r="$rps" -v n="$3" 'BEGIN { print r * n }')" "$p50" "$p99" "${non2xx:-0}"
    else
        printf '%-26s %9s req/s   p50 %-9s p99 %-9s non-2xx %s\n' "$1" "$rps" "$p50" "$p99" "${non2xx:-0}"
    fi
}

echo "release build, $(nproc) cores; PostgreSQL $(psql -tAq "$server" -c 'SHOW server_version'), ClickHouse $(curl -fs "$clickhouse" --data-binary 'SELECT version()')"

# 1. Ingest. Each request carries distinct events (thread, request and index in the payload).
if [ "$INGEST" = 1 ]; then
start_api
cat > "$work/ingest.lua" <<'LUA'
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
end
function init(args)
    sent = 0
    batch = tonumber(os.getenv("BATCH"))
    occurred = os.getenv("OCCURRED")
    wrk.method = "POST"
    wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
    wrk.headers["Content-Type"] = "application/json"
end
function request()
    sent = sent + 1
    local events = {}
    for i = 1, batch do
        local result = (i % 5 == 0) and "denied" or "allowed"
        events[i] = string.format(
            '{"event_type":"authz_decision","occurred_at":"%s","payload":{"tool_id":"tool_%d","result":"%s","mode":"cloud","decision_ms":%d.25,"service":"unknown","host":"bench-%d","pid":%d,"seq":%d,"i":%d}}',
            occurred, i % 50, result, i % 7, tid, tid, sent, i)
    end
    return wrk.format(nil, nil, nil, '{"events":[' .. table.concat(events, ",") .. ']}')
end
LUA
occurred=$(date -u -d '1 minute ago' +%Y-%m-%dT%H:%M:%S.000000+00:00)
echo "ingest: wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
for batch in 100 1000; do
    BATCH=$batch TOKEN=$ingest_token OCCURRED=$occurred \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 10s --latency -s "$work/ingest.lua" \
        "$base/v1/events/ingest" > "$work/ingest_$batch.txt"
    report "ingest batch $batch" "$work/ingest_$batch.txt" "$batch"
done
stop_api
fi
if [ "$STORE" = sqlite ]; then
    stored=$(python3 -c "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM events').fetchone()[0])" "$work/d2.sqlite")
    echo "ingest: $stored events stored"
    exit 0
fi
stored=$(psql -tAq "$D2__DATABASE__URL" -c 'SELECT count(*) FROM events')
echo "ingest: $stored events stored"

# 2. One account's EVENTS events over the last 30 days, written directly (a fixture).
account=$(psql -tAq "$D2__DATABASE__URL" -c "SELECT id FROM accounts WHERE name = 'metrics'")
psql -q "$D2__DATABASE__URL" <<SQL
INSERT INTO events (account_id, event_key, event_type, occurred_at, ingested_at, app_name,
                    service, host, decision, tool, latency_ms, payload)
SELECT '$account', sha256(('bench-' || i)::bytea),
       CASE WHEN i % 10 = 0 THEN 'policy_poll' ELSE 'authz_decision' END,
       now() - (i % 2592000) * interval '1 second',
       now() - (i % 2592000) * interval '1 second' + (i % 900) * interval '1 millisecond',
       'bench', 'bench', 'host-' || (i % 20),
       CASE WHEN i % 10 = 0 THEN NULL WHEN i % 7 = 0 THEN 0 ELSE 1 END,
       CASE WHEN i % 10 = 0 THEN NULL ELSE 'tool_' || (i % 200) END,
       CASE WHEN i % 10 = 0 THEN NULL ELSE (i % 13) + 0.5 END,
       jsonb_build_object('i', i)
FROM generate_series(1, $EVENTS) AS i;
ANALYZE events;
SQL
total=$(psql -tAq "$D2__DATABASE__URL" -c 'SELECT count(*) FROM events')

# 3. Export everything to ClickHouse, timed.
started=$(date +%s.%N)
$target/d2-worker --once analytics-export > "$work/export.txt"
ended=$(date +%s.%N)
# Every stored event counted once in the hourly counts.
exported=$(curl -fs "$clickhouse" --data-binary 'SELECT sum(events) FROM d2_bench.event_counts')
awk -v n="$exported" -v total="$total" -v s="$started" -v e="$ended" -v b="$D2__WORKER__JOBS__ANALYTICS_EXPORT__BATCH_SIZE" \
    'BEGIN { printf "export: %d of %d events in %.1f s = %.0f events/s (batches of %d)\n", n, total, e - s, n / (e - s), b }'

# 4. Metrics over the account's events, on each analytics store.
start=$(date -u -d '30 days ago' +%Y-%m-%dT%H:%M:%SZ)
for store in $METRICS_STORES; do
    D2__ANALYTICS__STORE=$store start_api
    echo "metrics over $EVENTS events, analytics.store = $store: wrk -t1 -c4 -d$DURATION"
    for route in "summary?start=$start" "timeseries?bucket=day&days=30" "timeseries?bucket=hour&days=30" "top?dimension=tools&days=30&n=10" "top?dimension=event_type&days=30"; do
        name="$store ${route%%\?*} ${route#*\?}"
        wrk -t1 -c4 -d"$DURATION" --timeout 30s --latency -H "Authorization: Bearer $metrics_token" \
            "$base/v1/metrics/$route" > "$work/metrics.txt"
        report "${name:0:60}" "$work/metrics.txt" 1
    done
    stop_api
done

declare -A totals
# 5. The same totals from both stores: the summary over the window from `start` (fixed, so
#    both answer over the same events; the `days=` routes slide with the clock).
for store in postgres clickhouse; do
    D2__ANALYTICS__STORE=$store start_api
    summary=$(curl -fs -H "Authorization: Bearer $metrics_token" "$base/v1/metrics/summary?start=$start" --max-time 300)
    stop_api
    totals[$store]=$(python3 -c 'import json, sys; s = json.loads(sys.argv[1]); print(s["total_authorizations"], s["total_denied"], s["unique_tools"], round(s["avg_decision_ms"], 4))' "$summary")
    echo "totals $store: authorizations, denied, unique tools, mean decision ms: ${totals[$store]}"
done
if [ "${totals[postgres]}" = "${totals[clickhouse]}" ]; then
    echo "totals: equal"
else
    echo "totals: DIFFERENT" >&2
    exit 1
fi
