#!/usr/bin/env bash
# Property-based API test: schemathesis (pinned in tests/schemathesis/requirements.txt,
# installed from PyPI into target/schemathesis-venv) generates requests from the served
# `/openapi.json` and checks every answer against it: status codes, headers, content
# types and bodies declared, schema-valid requests accepted, schema-invalid ones refused,
# undeclared methods answered 405, no 5xx. Runs every phase (examples, coverage, fuzzing,
# stateful) with an admin token against a debug d2-api on a free port and a throwaway
# PostgreSQL database (STORE=sqlite: a SQLite file). The only routes left out revoke or
# rotate the caller's own token, which would end the run's credential. Exits non-zero on
# any failure. MAX_EXAMPLES and SEED tune the run.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=tests/schemathesis/requirements.txt
venv=target/schemathesis-venv
if [ ! -x "$venv/bin/st" ] || ! cmp -s "$requirements" "$venv/requirements.txt"; then
    rm -rf "$venv"
    mkdir -p target
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
    cp "$requirements" "$venv/requirements.txt"
fi

scripts/services.sh
cargo build --quiet --locked --bin d2-api --bin d2ctl
bin="${CARGO_TARGET_DIR:-target}/debug"

server=${D2_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
db="d2_schemathesis_$$"
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
export D2__CRYPTO__TOKEN_PEPPER=$("$bin/d2ctl" generate-secret)
export D2__CRYPTO__JWK_AES_KEY=$("$bin/d2ctl" generate-secret)
export D2__HTTP__ADDR="127.0.0.1:$port"
control_plane=$("$bin/d2ctl" generate-secret)
export D2__AUTH__CONTROL_PLANE_TOKEN="$control_plane"
# Most generated requests are refused on purpose; the per-IP limit on refused requests
# would otherwise answer the rest of the run 429.
export D2__RATE_LIMIT__UNAUTHENTICATED_PER_MINUTE=1000000
export D2__RATE_LIMIT__UNAUTHENTICATED_BURST=1000000
# The run issues many tokens; at the trial's cap every later issue would be 402, and the
# operations that follow an issue would go untested.
export D2__PLANS__TRIAL__MAX_TOKENS=1000000
"$bin/d2ctl" migrate >/dev/null
admin=$("$bin/d2ctl" bootstrap --account-name schemathesis 2>/dev/null)
"$bin/d2-api" > "$work/api.log" 2>&1 &
api_pid=$!
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

api="http://127.0.0.1:$port"
status=0
"$venv/bin/st" --config-file tests/schemathesis/schemathesis.toml run "$api/openapi.json" \
    --url "$api" \
    -H "Authorization: Bearer $admin" \
    -H "X-Control-Plane-Token: $control_plane" \
    --checks all \
    --phases examples,coverage,fuzzing,stateful \
    --exclude-path-regex '^/v1/user-token/(revoke|rotate)$' \
    --max-examples "${MAX_EXAMPLES:-25}" \
    --seed "${SEED:-1}" \
    --workers 2 \
    --generation-database none \
    --no-color \
    --report-dir "$work/report" \
    || status=$?
if [ "$status" -ne 0 ]; then
    echo "schemathesis: failed; the server's log follows" >&2
    grep -v '"level":"INFO"' "$work/api.log" | tail -n 40 >&2 || true
fi
exit "$status"
