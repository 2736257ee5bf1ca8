#!/usr/bin/env bash
# Interoperability test with the official MCP Python SDK (tests/mcp/requirements.txt, from
# PyPI into target/mcp-venv) as the client of a small MCP server protected by D2: the
# client discovers the server's protected resource metadata and the account's issuer,
# identifies itself by a Client ID Metadata Document served over HTTPS (a throwaway CA that
# D2 is told to trust), a person in headless Chromium approves it on the consent page, and
# its token calls the tool until she withdraws her consent; then a delegation chain
# (person -> agent A -> agent B) calls it, and revoking A's grant stops B's token at a
# second replica within a second. Creates a throwaway PostgreSQL database, two d2-api
# replicas on free ports with browser sign-in at the tests' identity provider, then runs
# tests/mcp/interop.py.
#
# D2_BIN=DIR takes d2-api and d2ctl from DIR instead of building them. D2_TEST_OIDC_URL and
# D2_TEST_BROWSER are used as scripts/test.sh exports them; unset, this script starts its
# own identity provider (stopped at the end) and installs the browser.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
venv=$(scripts/python-venv.sh mcp)
if [ -n "${D2_BIN:-}" ]; then
    bin=$D2_BIN
else
    cargo build --quiet --locked --bin d2-api --bin d2ctl
    bin=target/debug
fi
browser=${D2_TEST_BROWSER:-$(scripts/browser.sh)}

server=${D2_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
db="d2_mcp_interop_$$"
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
replica_port=$(free_port)
own_oidc=
cleanup() {
    for pid in ${api_pid:-} ${replica_pid:-}; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    psql -q "$server" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
    if [ -n "$own_oidc" ]; then OIDC_DIR="$work/oidc" scripts/oidc-provider.sh stop || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${D2_TEST_OIDC_URL:-}" ]; then
    own_oidc=1
    D2_TEST_OIDC_URL=$(OIDC_DIR="$work/oidc" scripts/oidc-provider.sh start)
fi
# D2's client at the identity provider, for signing people in on the consent pages.
idp_client=$(curl -fsS -X POST -H 'Content-Type: application/json' \
    -d "{\"redirect_uris\": [\"http://127.0.0.1:$port/oauth/signin/callback\"]}" \
    "$D2_TEST_OIDC_URL/test/clients")
field() { python3 -c "import json, sys; print(json.load(sys.stdin)[\"$1\"])"; }

# The CA D2 trusts for the client's metadata document, and the certificate the test serves.
"$venv/bin/python" tests/mcp/certs.py "$work"

export D2_ENV=production
psql -q "$server" -c "CREATE DATABASE $db" >/dev/null
export D2__DATABASE__URL="${server%/*}/$db"
pepper=$("$bin/d2ctl" generate-secret)
aes_key=$("$bin/d2ctl" generate-secret)
export D2__CRYPTO__TOKEN_PEPPER=$pepper D2__CRYPTO__JWK_AES_KEY=$aes_key
# Both replicas name the same issuer.
export D2__HTTP__PUBLIC_BASE_URL="http://127.0.0.1:$port"
export D2__AUTH__IDP__ISSUER="$D2_TEST_OIDC_URL"
export D2__AUTH__IDP__AUDIENCE=d2-tests-api
idp_id=$(field client_id <<<"$idp_client")
idp_secret=$(field client_secret <<<"$idp_client")
export D2__AUTH__IDP__CLIENT_ID=$idp_id D2__AUTH__IDP__CLIENT_SECRET=$idp_secret
# The metadata document is on 127.0.0.1, under the throwaway CA.
export D2__OAUTH__FETCH_PRIVATE_ADDRESSES=true
export D2__OAUTH__FETCH_ROOT_CERTIFICATES="$work/ca.pem"
"$bin/d2ctl" migrate >/dev/null
admin=$("$bin/d2ctl" bootstrap --account-name mcp-interop 2>/dev/null)
D2__HTTP__ADDR="127.0.0.1:$port" "$bin/d2-api" > "$work/api.log" 2>&1 &
api_pid=$!
D2__HTTP__ADDR="127.0.0.1:$replica_port" "$bin/d2-api" > "$work/replica.log" 2>&1 &
replica_pid=$!
for p in "$port" "$replica_port"; do
    for _ in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$p/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
done

status=0
# PYTHONDONTWRITEBYTECODE: no __pycache__ beside tests/mcp/server.py in the work tree.
PYTHONDONTWRITEBYTECODE=1 \
D2_API_URL="http://127.0.0.1:$port" \
D2_REPLICA_URL="http://127.0.0.1:$replica_port" \
D2_INTEROP_ADMIN_TOKEN="$admin" \
D2_TEST_BROWSER="$browser" \
MCP_INTEROP_TLS="$work" \
    timeout 150 "$venv/bin/python" tests/mcp/interop.py || status=$?
if [ "$status" -ne 0 ]; then
    echo "mcp-interop: failed; the servers' logs follow" >&2
    tail -n 60 "$work/api.log" >&2
    echo "mcp-interop: the second replica's log" >&2
    tail -n 30 "$work/replica.log" >&2
fi
exit "$status"
