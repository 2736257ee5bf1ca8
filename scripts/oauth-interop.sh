#!/usr/bin/env bash
# Interoperability test of each account's authorization server with real peers: authlib
# (a Python OAuth client) drives it through discovery only, and PyJWT verifies the access
# tokens with nothing but the jwks_uri, as a resource server would. Creates a virtualenv in
# target/oauth-venv (from PyPI), a throwaway PostgreSQL database, a server on a free port
# and an account with agents of each client authentication method, then runs
# tests/oauth/interop.py.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
venv=$(scripts/python-venv.sh oauth)
cargo build --quiet --locked --bin d2-api --bin d2ctl

server=${D2_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
db="d2_oauth_interop_$$"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() {
    [ -n "${api_pid:-}" ] && kill "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null
    psql -q "$server" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

export D2_ENV=production
psql -q "$server" -c "CREATE DATABASE $db" >/dev/null
export D2__DATABASE__URL="${server%/*}/$db"
export D2__CRYPTO__TOKEN_PEPPER=$(target/debug/d2ctl generate-secret)
export D2__CRYPTO__JWK_AES_KEY=$(target/debug/d2ctl generate-secret)
export D2__HTTP__ADDR="127.0.0.1:$port"
export D2__HTTP__PUBLIC_BASE_URL="http://127.0.0.1:$port"
target/debug/d2ctl migrate >/dev/null
admin=$(target/debug/d2ctl bootstrap --account-name oauth-interop 2>/dev/null)
target/debug/d2-api > "$work/api.log" 2>&1 &
api_pid=$!
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

status=0
D2_API_URL="http://127.0.0.1:$port" D2_INTEROP_ADMIN_TOKEN="$admin" \
    "$venv/bin/python" tests/oauth/interop.py || status=$?
if [ "$status" -ne 0 ]; then
    echo "oauth-interop: failed; the server's log follows" >&2
    tail -n 80 "$work/api.log" >&2
fi
exit "$status"
