#!/usr/bin/env bash
# Usage recording and eligibility checks of the release build. Usage: wrk POSTs batches of distinct usage reports to
# POST /v1/billing/usage from CONNECTIONS connections (16 concurrent writers), all on one
# account, first on the local PostgreSQL, then on a SQLite file. Every 201 means the batch
# was committed: each report's record written, the batch's ledger entry written and its
# credits taken from the grant, the hour's totals added. Afterwards the balances are
# checked exact: the credits granted minus the balance equal the credits the usage windows
# say were charged, and the records stored (counted in the database) equal the reports the
# windows count. Eligibility, before the recording: wrk POSTs one check from
# ELIGIBILITY_CONNECTIONS connections (default 4: latency, not queueing) to
# POST /v1/billing/eligibility on each store, beside the bare actix JSON handler
# (crates/api/examples/bare.rs) measured in the same run.
#   DURATION=15s CONNECTIONS=16 BATCH=100 STORES="postgres sqlite" ./scripts/bench-usage.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}
BATCH=${BATCH:-100}
PORT=${PORT:-18083}
STORES=${STORES:-postgres sqlite}
target="${CARGO_TARGET_DIR:-target}/release"

scripts/services.sh
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v jq >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq jq >/dev/null; }
cargo build --release --locked --quiet --bin d2-api --bin d2ctl --example bare
ELIGIBILITY_CONNECTIONS=${ELIGIBILITY_CONNECTIONS:-4}

server=postgres://postgres@127.0.0.1:5432/postgres
db="d2_bench_usage_$$"
work=$(mktemp -d)
bare_pid=
stop_api() {
    if [ -n "${api_pid:-}" ]; then
        kill "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null || true
        api_pid=
    fi
}
start_api() {
    $target/d2-api >> "$work/api.log" 2>&1 &
    api_pid=$!
    for _ in $(seq 1 100); do curl -fs "$base/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
}
cleanup() {
    stop_api
    [ -n "$bare_pid" ] && kill "$bare_pid" 2>/dev/null && wait "$bare_pid" 2>/dev/null || true
    psql -q "$server" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    [ -n "${KEEP_WORK:-}" ] && echo "bench-usage: kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

export D2_ENV=production
export D2__DATABASE__POOL__MAX_SIZE=32
export D2__CRYPTO__TOKEN_PEPPER=$($target/d2ctl generate-secret)
export D2__CRYPTO__JWK_AES_KEY=$($target/d2ctl generate-aes-key)
export D2__HTTP__ADDR="127.0.0.1:$PORT"
export D2__LOG__FILTER=warn
# The trial's monthly model tokens out of the way of the checks after the recording.
export D2__PLANS__TRIAL__MONTHLY_MODEL_TOKENS=1000000000000000
base="http://127.0.0.1:$PORT"

cat > "$work/usage.lua" <<'LUA'
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
end
function init(args)
    sent = 0
    batch = tonumber(os.getenv("BATCH"))
    wrk.method = "POST"
    wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
    wrk.headers["Content-Type"] = "application/json"
end
function request()
    sent = sent + 1
    local reports = {}
    for i = 1, batch do
        local usage
        if i % 4 == 0 then
            usage = string.format('{"kind":"agent","agent":"agent-%d","operation":"invoke","invocations":%d}', i % 7, 1 + i % 3)
        else
            usage = string.format('{"kind":"model","model":"gpt-4o-mini","input_tokens":%d,"output_tokens":%d}', 500 + i, 50 + i % 11)
        end
        reports[i] = string.format('{"idempotency_key":"t%d-r%d-i%d","usage":%s}', tid, sent, i, usage)
    end
    return wrk.format(nil, nil, nil, '{"reports":[' .. table.concat(reports, ",") .. ']}')
end
LUA

latency() { # name, wrk output file
    printf '%-22s %9s req/s   p50 %-9s p99 %-9s non-2xx %s\n' "$1" \
        "$(awk '/Requests\/sec/ {print $2}' "$2")" "$(awk '$1 == "50%" {print $2}' "$2")" \
        "$(awk '$1 == "99%" {print $2}' "$2")" "$(awk '/Non-2xx/ {print $5}' "$2")"
}
cat > "$work/eligibility.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"kind":"model","model":"gpt-4o-mini","input_tokens":1000,"output_tokens":100}'
LUA
target_bare="${CARGO_TARGET_DIR:-target}/release/examples/bare"
"$target_bare" "127.0.0.1:$((PORT + 1))" > /dev/null 2>&1 &
bare_pid=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$((PORT + 1))/json" >/dev/null 2>&1 && break; sleep 0.1; done
wrk -t2 -c"$ELIGIBILITY_CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$((PORT + 1))/json" > "$work/bare.txt"

report() { # name, wrk output file
    local rps p50 p99 non2xx
    rps=$(awk '/Requests\/sec/ {print $2}' "$2")
    p50=$(awk '$1 == "50%" {print $2}' "$2")
    p99=$(awk '$1 == "99%" {print $2}' "$2")
    non2xx=$(awk '/Non-2xx/ {print $5}' "$2")
    printf '%-22s %9s req/s %10.0f reports/s   p50 %-9s p99 %-9s non-2xx %s\n' \
        "$1" "$rps" "$(awk -v r="$rps" -v n="$BATCH" 'BEGIN { print r * n }')" "$p50" "$p99" "${non2xx:-0}"
}

echo "release build, $(nproc) cores; PostgreSQL $(psql -tAq "$server" -c 'SHOW server_version'); wrk -t$THREADS -c$CONNECTIONS -d$DURATION, batches of $BATCH reports, one account"
for store in $STORES; do
    if [ "$store" = sqlite ]; then
        export D2__DATABASE__URL="sqlite://$work/d2.sqlite"
    else
        psql -q "$server" -c "CREATE DATABASE $db" >/dev/null
        export D2__DATABASE__URL="postgres://postgres@127.0.0.1:5432/$db"
    fi
    $target/d2ctl migrate >/dev/null
    admin=$($target/d2ctl bootstrap --account-name usage 2>/dev/null)
    start_api
    account=$(curl -fs "$base/v1/accounts/me" -H "Authorization: Bearer $admin" | jq -r .account_id)
    granted=1000000000000
    curl -fs "$base/v1/billing/credits/add" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
        -d "{\"amount\":$granted,\"source\":\"purchase\"}" >/dev/null
    reporter=$(curl -fs "$base/v1/accounts/$account/tokens" -H "Authorization: Bearer $admin" \
        -H 'Content-Type: application/json' -d '{"scopes":["usage.report"]}' | jq -r .token)
    # Eligibility first, on a quiet machine as the bare handler was measured: after the
    # recording below, the kernel and PostgreSQL spend seconds writing out what it wrote.
    # One report first, so that the standing holds usage of the month.
    curl -fs "$base/v1/billing/usage" -H "Authorization: Bearer $reporter" -H 'Content-Type: application/json' \
        -d '{"reports":[{"idempotency_key":"warm-up","usage":{"kind":"model","model":"gpt-4o-mini","input_tokens":1000,"output_tokens":100}}]}' >/dev/null
    # And one check: an account's first check reads its standing from the stores before it
    # answers; the run measures the checks answered from memory.
    curl -fs "$base/v1/billing/eligibility" -H "Authorization: Bearer $reporter" -H 'Content-Type: application/json' \
        -d '{"kind":"model","model":"gpt-4o-mini","input_tokens":1000,"output_tokens":100}' >/dev/null
    TOKEN=$reporter wrk -t2 -c"$ELIGIBILITY_CONNECTIONS" -d"$DURATION" --latency \
        -s "$work/eligibility.lua" "$base/v1/billing/eligibility" > "$work/eligibility_$store.txt"
    latency "eligibility on $store" "$work/eligibility_$store.txt"
    # The server's own count of the checks, and of those it took over 1 ms to answer (its
    # latency histogram): wrk adds to its percentiles, for each answer slower than twice
    # the mean interval, the answers a constant rate would have had waiting behind it.
    curl -fs "$base/metrics" | awk '/^d2_http_request_duration_seconds_bucket\{.*eligibility/ {
            if ($0 ~ /le="0.001"/) fast = $2; if ($0 ~ /le="\+Inf"/) all = $2 }
        END { printf "  the server answered %d checks, %d of them in over 1 ms\n", all, all - fast }'
    BATCH=$BATCH TOKEN=$reporter wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 10s --latency \
        -s "$work/usage.lua" "$base/v1/billing/usage" > "$work/usage_$store.txt"
    report "usage on $store" "$work/usage_$store.txt"
    # wrk stops counting at its deadline, not the server working: batches still in flight
    # are committed after it. A graceful stop waits for them, so what is read next is
    # all there is.
    stop_api
    start_api
    # Exact balances: what left the grant is what the usage says it cost.
    balance=$(curl -fs "$base/v1/billing/credits" -H "Authorization: Bearer $admin" | jq .balance)
    usage=$(curl -fs "$base/v1/billing/usage?window=month" -H "Authorization: Bearer $admin")
    charged=$(echo "$usage" | jq .totals.credits)
    reports=$(echo "$usage" | jq .totals.reports)
    requests=$(awk '/requests in/ {print $1}' "$work/usage_$store.txt")
    non2xx=$(awk '/Non-2xx/ {print $5}' "$work/usage_$store.txt")
    spent=$((granted - balance))
    if [ "$store" = sqlite ]; then
        stored=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM usage_records").fetchone()[0])' "$work/d2.sqlite")
    else
        stored=$(psql -tAq "postgres://postgres@127.0.0.1:5432/$db" -c 'SELECT count(*) FROM usage_records')
    fi
    echo "  $reports reports in the windows, $stored records stored ($requests requests, ${non2xx:-0} not 2xx), $charged credits charged, $spent credits gone from the grant"
    if [ "$spent" != "$charged" ] || [ "$stored" != "$reports" ]; then
        echo "bench-usage: the balance is not exact ($spent spent, $charged charged; $stored records, $reports reports)" >&2
        exit 1
    fi
    stop_api
done
latency "bare actix JSON" "$work/bare.txt"
