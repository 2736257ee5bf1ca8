#!/usr/bin/env bash
# The committed diesel schema must be exactly what the migrations produce, and every
# migration must roll back cleanly. Uses the diesel CLI (installed on first use). This is
# PostgreSQL's schema; SQLite's, written by hand, is held to its migrations by a test of
# d2-sqlite (`cargo test -p d2-sqlite schema`), which the workspace tests run.
set -euo pipefail
cd "$(dirname "$0")/.."

DIESEL_VERSION=2.3.14
if ! command -v diesel >/dev/null 2>&1 || ! diesel --version | grep -q "$DIESEL_VERSION"; then
    if ! dpkg -s libpq-dev >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq libpq-dev >/dev/null
    fi
    echo "check-schema: installing diesel_cli $DIESEL_VERSION" >&2
    cargo install --quiet --locked diesel_cli --version "$DIESEL_VERSION" --no-default-features --features postgres
fi

server=${D2_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
name="d2_schema_check_$$"
url="${server%/*}/$name"
psql -q "$server" -c "CREATE DATABASE $name" >/dev/null
trap 'psql -q "$server" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null' EXIT

diesel migration run --database-url "$url" --migration-dir migrations >/dev/null
diesel migration redo --all --database-url "$url" --migration-dir migrations >/dev/null
generated=$(mktemp)
diesel print-schema --database-url "$url" --config-file diesel.toml > "$generated"
if ! diff -u crates/adapters/postgres/src/schema.rs "$generated"; then
    echo "check-schema: PostgreSQL's schema.rs differs from the migrations; regenerate it with diesel print-schema" >&2
    exit 1
fi
echo "check-schema: PostgreSQL's schema.rs matches the migrations, and they roll back cleanly" >&2
echo "check-schema: SQLite's schema.rs is checked against its migrations by \`cargo test -p d2-sqlite schema\` (part of the workspace tests)" >&2
