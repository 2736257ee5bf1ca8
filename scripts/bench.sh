#!/usr/bin/env bash
# Load benchmark of the release build, one run: the hot routes of d2-api beside a bare
# actix-web server (crates/api/examples/bare.rs: same allocator and workers, no
# authentication, middleware or logging) measured in the same run. Prints requests/s, p50
# and p99 per route and each hot route's share of the bare handler's throughput: the
# authenticated 304 poll against the bare 304, the JWKS and /v1/accounts/me against the
# bare JSON handler; and /v1/accounts/me with a signed-in person's cached JWT (from a real
# OpenID provider, scripts/oidc-provider.sh) against the same route with an API token.
# STORE=sqlite runs the same load on a SQLite file instead of the local PostgreSQL.
# INSTRUCTIONS=1 runs d2-api under valgrind's callgrind instead and prints the instructions
# it executes per request on each hot route: exact and repeatable whatever else the machine
# does, where throughput on two shared cores moves by several percent from run to run;
# KEEP=dir keeps callgrind's files there, for callgrind_annotate.
#   DURATION=20s CONNECTIONS=64 THREADS=1 STORE=postgres ./scripts/bench.sh
#   ROUNDS=5 DURATION=5s ./scripts/bench.sh
#   INSTRUCTIONS=1 REQUESTS=2000 LOG_FILTER=info ./scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
PORT=${PORT:-18080}
LOG_FILTER=${LOG_FILTER:-info}
STORE=${STORE:-postgres}
INSTRUCTIONS=${INSTRUCTIONS:-0}
REQUESTS=${REQUESTS:-2000}
# The routes are measured ROUNDS times in turn: on shared cores the machine's speed drifts
# by more than the targets' margins between runs; each round compares a route with the
# reference measured just before it, and the median of the rounds is printed as well.
ROUNDS=${ROUNDS:-1}

scripts/services.sh
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
if [ "$INSTRUCTIONS" = 1 ]; then
    command -v valgrind >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
fi
# One build, so the reference and the server share every dependency's build.
cargo build --release --locked --quiet --bin d2-api --bin d2ctl --example bare

server=postgres://postgres@127.0.0.1:5432/postgres
db="d2_bench_$$"
work=$(mktemp -d)
cleanup() {
    [ -n "${api_pid:-}" ] && kill "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null
    [ -n "${bare_pid:-}" ] && kill "$bare_pid" 2>/dev/null && wait "$bare_pid" 2>/dev/null
    [ "$STORE" = postgres ] && psql -q "$server" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
    OIDC_DIR="$work/oidc" scripts/oidc-provider.sh stop 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

export D2_ENV=production
if [ "$STORE" = sqlite ]; then
    export D2__DATABASE__URL="sqlite://$work/d2.sqlite"
else
    psql -q "$server" -c "CREATE DATABASE $db" >/dev/null
    export D2__DATABASE__URL="postgres://postgres@127.0.0.1:5432/$db"
fi
export D2__CRYPTO__TOKEN_PEPPER=$(target/release/d2ctl generate-secret)
export D2__CRYPTO__JWK_AES_KEY=$(target/release/d2ctl generate-aes-key)
export D2__HTTP__ADDR="127.0.0.1:$PORT"
export D2__LOG__FILTER="$LOG_FILTER"
# wrk polls with one token far faster than any fleet: the poll ceiling is lifted so the
# route's own cost is measured (the ceiling is still checked on every poll).
export D2__POLICY__POLL_CEILING_PER_SECOND=1000000000
export D2__POLICY__POLL_CEILING_BURST=1000000000
# People sign in through a real OpenID provider.
issuer=$(OIDC_DIR="$work/oidc" scripts/oidc-provider.sh start)
export D2__AUTH__IDP__ISSUER="$issuer"
export D2__AUTH__IDP__AUDIENCE="https://d2.bench"
target/release/d2ctl migrate >/dev/null
token=$(target/release/d2ctl bootstrap 2>/dev/null)
if [ "$INSTRUCTIONS" = 1 ]; then
    valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" target/release/d2-api > "$work/api.log" 2>&1 &
else
    target/release/d2-api > "$work/api.log" 2>&1 &
fi
api_pid=$!
bare_base="http://127.0.0.1:$((PORT + 1))"
if [ "$INSTRUCTIONS" = 1 ]; then
    valgrind --tool=callgrind --callgrind-out-file="$work/bare.out" target/release/examples/bare "127.0.0.1:$((PORT + 1))" > /dev/null 2>&1 &
else
    target/release/examples/bare "127.0.0.1:$((PORT + 1))" > /dev/null 2>&1 &
fi
bare_pid=$!
for _ in $(seq 1 600); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && curl -fs "$bare_base/json" >/dev/null 2>&1 && break
    sleep 0.1
done

base="http://127.0.0.1:$PORT"
cpu_ticks() { # pid: its user + system CPU time so far, in clock ticks
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}
run() { # name, url (a path on d2-api, or a whole URL), extra wrk args...
    local name=$1 url=$2
    shift 2
    local pid=$bare_pid
    case "$url" in /*) url="$base$url"; pid=$api_pid ;; esac
    local cpu_before cpu_after
    cpu_before=$(cpu_ticks "$pid")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" > "$work/$name.txt"
    cpu_after=$(cpu_ticks "$pid")
    local rps p50 p99 non2xx requests cpu_us
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/$name.txt")
    requests=$(awk '/requests in/ {print $1}' "$work/$name.txt")
    # The server's own CPU time per request (user + system), whatever wrk costs.
    cpu_us=$(awk -v t=$((cpu_after - cpu_before)) -v n="$requests" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    p50=$(awk '$1 == "50%" {print $2}' "$work/$name.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$work/$name.txt")
    non2xx=$(awk '/Non-2xx/ {print $5}' "$work/$name.txt")
    printf '%-18s %12s req/s   p50 %-9s p99 %-9s server CPU %6s us/request   non-2xx %s\n' \
        "$name" "$rps" "$p50" "$p99" "$cpu_us" "${non2xx:-0}"
    echo "$rps" >> "$work/$name.rps"
}

# A published policy to poll, signed with a registered Ed25519 publisher key.
account=$(curl -fs -H "Authorization: Bearer $token" "$base/v1/accounts/me" | python3 -c 'import json, sys; print(json.load(sys.stdin)["account_id"])')
issue() {
    curl -fs -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "$1" \
        "$base/v1/accounts/$account/tokens" | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}
dev=$(issue '{"kind": "dev"}')
# A signed-in person with an account of their own: the JWT is verified once, then cached.
jwt=$(curl -fs -u d2-tests:d2-tests-secret -d grant_type=urn:d2:test:user -d sub=bench-person \
    -d email=person@bench.test -d email_verified=true -d name=Bench -d resource=https://d2.bench \
    -d ttl=86400 "$issuer/token" | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
org=$(curl -fs -X POST -H "Authorization: Bearer $jwt" -H 'Content-Type: application/json' \
    -d '{"name": "Bench people"}' "$base/v1/accounts" | python3 -c 'import json, sys; print(json.load(sys.stdin)["account_id"])')
server_token=$(issue '{"kind": "server", "app_name": "bench"}')
printf 'metadata:\n  name: bench\n  description: load test\npolicies:\n  - role: analyst\n    permissions: [reports.read, reports.export]\n' > "$work/policy.yaml"
"$(scripts/python-venv.sh)/bin/python" - "$work" <<'PY'
import base64, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization
work = sys.argv[1]
key = Ed25519PrivateKey.generate()
public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
body = open(f"{work}/policy.yaml", "rb").read()
open(f"{work}/public_key", "w").write(base64.b64encode(public).decode())
open(f"{work}/signature", "w").write(base64.b64encode(key.sign(body)).decode())
PY
key_id=$(curl -fs -X POST -H "Authorization: Bearer $dev" -H 'Content-Type: application/json' \
    -d "{\"public_key\": \"$(cat "$work/public_key")\"}" "$base/v1/keys" | python3 -c 'import json, sys; print(json.load(sys.stdin)["key_id"])')
publish_once() {
    curl -fs -X POST -H "Authorization: Bearer $dev" -H "X-D2-Key-Id: $key_id" -H "X-D2-Signature: $(cat "$work/signature")" \
        -H 'If-Match: *' --data-binary "@$work/policy.yaml" "$base/v1/policy/publish?app_name=bench" -o /dev/null -D - \
        | awk 'tolower($1) == "etag:" { print $2 }' | tr -d '\r'
}
etag=$(publish_once)
cat > "$work/publish.lua" <<LUA
wrk.method = "POST"
wrk.body = io.open("$work/policy.yaml"):read("*a")
wrk.headers["Authorization"] = "Bearer $dev"
wrk.headers["X-D2-Key-Id"] = "$key_id"
wrk.headers["X-D2-Signature"] = "$(cat "$work/signature")"
wrk.headers["If-Match"] = "*"
LUA

each_route() { # measure (run or count): the hot routes and the reference each is compared with
    "$1" bare_304 "$bare_base/bundle" -H 'If-None-Match: "sha256:bare"'
    "$1" bundle_304 /v1/policy/bundle -H "Authorization: Bearer $server_token" -H "If-None-Match: $etag"
    "$1" bare_json "$bare_base/json"
    "$1" jwks /.well-known/jwks.json -H "Authorization: Bearer $server_token"
    "$1" accounts_me /v1/accounts/me -H "Authorization: Bearer $token"
    "$1" accounts_me_jwt /v1/accounts/me -H "Authorization: Bearer $jwt" -H "X-Org-ID: $org"
    "$1" healthz /healthz
}
each_share() { # compare (share or instruction_share): each hot route with its reference
    "$1" bundle_304 bare_304
    "$1" jwks bare_json
    "$1" accounts_me bare_json
    "$1" healthz bare_json
    "$1" accounts_me_jwt accounts_me
}

if [ "$INSTRUCTIONS" = 1 ]; then
    count() { # name, path (on d2-api) or whole URL (on the reference), curl args...:
        # instructions per request over REQUESTS requests
        local name=$1 url=$2 pid=$bare_pid out=bare.out urls=() total
        shift 2
        case "$url" in /*) url="$base$url"; pid=$api_pid; out=callgrind.out ;; esac
        for _ in $(seq 1 "$REQUESTS"); do urls+=("$url"); done
        curl -s "$@" "${urls[@]}" > /dev/null # warm-up, on one keep-alive connection
        callgrind_control -z "$pid" > /dev/null 2>&1
        curl -s "$@" "${urls[@]}" > /dev/null
        callgrind_control -d "$name" "$pid" > /dev/null 2>&1
        total=$(awk '/^summary:/ { print $2 }' "$(ls -t "$work/$out".* | head -1)")
        printf '%-18s %10d instructions/request\n' "$name" $((total / REQUESTS))
        echo $((total / REQUESTS)) > "$work/$name.count"
    }
    instruction_share() { # route, reference: the reference's instructions as a share of the route's
        awk -v a="$(cat "$work/$1.count")" -v h="$(cat "$work/$2.count")" -v r="$1" -v b="$2" \
            'BEGIN { printf "%-12s executes %.2fx the instructions of %s (%.0f%%)\n", r, a / h, b, 100 * h / a }'
    }
    echo "d2-api release build under callgrind, $REQUESTS requests per route, log filter $LOG_FILTER (JSON to a file)"
    each_route count
    each_share instruction_share
    if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$work"/*.out.* "$KEEP"/; fi
    exit 0
fi
echo "d2-api release build, $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, log filter $LOG_FILTER (JSON to a file), $ROUNDS round(s)"
for round in $(seq 1 "$ROUNDS"); do
    [ "$ROUNDS" -gt 1 ] && echo "round $round"
    each_route run
done
CONNECTIONS=1 THREADS=1 run publish_1_client "/v1/policy/publish?app_name=bench" -s "$work/publish.lua"
share() { # route, reference: the share in each round (the route against the reference
    # measured just before it), and their median
    local shares median
    shares=$(paste "$work/$1.rps" "$work/$2.rps" | awk '{ printf "%.0f\n", 100 * $1 / $2 }')
    median=$(sort -n <<< "$shares" | awk '{ v[NR] = $1 } END { printf "%.0f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
    if [ "$ROUNDS" -gt 1 ]; then
        printf '%-12s reaches %s of %s (median %s%%)\n' "$1" "$(sed 's/$/%/' <<< "$shares" | paste -sd, | sed 's/,/, /g')" "$2" "$median"
    else
        printf '%-12s reaches %s%% of %s\n' "$1" "$median" "$2"
    fi
}
each_share share
