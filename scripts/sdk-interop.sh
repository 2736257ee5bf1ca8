#!/usr/bin/env bash
# Interoperability test: the unmodified D2 Python SDK (d2-sdk 1.2.2, CLI and runtime)
# against a real d2-api. Creates a virtualenv in target/sdk-venv (from PyPI), a throwaway
# database, a server on a free port, an account with dev, server and admin tokens, then
# runs tests/sdk/interop.py. STORE=sqlite puts the server on a SQLite file instead.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
venv=$(scripts/python-venv.sh)
cargo build --quiet --locked --bin d2-api --bin d2ctl

server=${D2_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
db="d2_interop_$$"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
STORE=${STORE:-postgres}
cleanup() {
    [ -n "${api_pid:-}" ] && kill "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null
    [ "$STORE" = postgres ] && psql -q "$server" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

export D2_ENV=production
if [ "$STORE" = sqlite ]; then
    export D2__DATABASE__URL="sqlite://$work/d2.sqlite"
else
    psql -q "$server" -c "CREATE DATABASE $db" >/dev/null
    export D2__DATABASE__URL="${server%/*}/$db"
fi
export D2__CRYPTO__TOKEN_PEPPER=$(target/debug/d2ctl generate-secret)
export D2__CRYPTO__JWK_AES_KEY=$(target/debug/d2ctl generate-secret)
export D2__HTTP__ADDR="127.0.0.1:$port"
# Short poll intervals so a running SDK picks changes up within seconds.
export D2__PLANS__TRIAL__POLL_SECONDS=2
# ... and flushes its telemetry every few seconds.
export D2__PLANS__TRIAL__INGEST_INTERVAL_SECONDS=3
target/debug/d2ctl migrate >/dev/null
admin=$(target/debug/d2ctl bootstrap --account-name interop 2>/dev/null)
target/debug/d2-api > "$work/api.log" 2>&1 &
api_pid=$!
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

api="http://127.0.0.1:$port"
account=$(curl -fs -H "Authorization: Bearer $admin" "$api/v1/accounts/me" | python3 -c 'import json, sys; print(json.load(sys.stdin)["account_id"])')
issue() {
    curl -fs -X POST -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' -d "$1" \
        "$api/v1/accounts/$account/tokens" | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}
app=interop-agent
status=0
D2_API_URL="$api" \
D2_INTEROP_ADMIN_TOKEN="$admin" \
D2_INTEROP_DEV_TOKEN=$(issue '{"kind": "dev"}') \
D2_INTEROP_SERVER_TOKEN=$(issue "{\"kind\": \"server\", \"app_name\": \"$app\"}") \
D2_INTEROP_ACCOUNT_ID="$account" \
D2_INTEROP_APP="$app" \
D2_INTEROP_WORKDIR="$work/sdk" \
    "$venv/bin/python" tests/sdk/interop.py || status=$?
if [ "$status" -ne 0 ]; then
    echo "sdk-interop: failed; the server's log follows" >&2
    tail -n 80 "$work/api.log" >&2
fi
exit "$status"
