#!/usr/bin/env bash
# The whole test suite, as CI runs it. Needs the Rust toolchain, Python 3, Node.js and npm;
# starts the local PostgreSQL (installing it if missing), a private ClickHouse (installed
# from Debian's packages if missing) and the tests' OpenID provider (its npm packages
# installed into target/oidc), both stopped at the end, installs the diesel CLI for the
# schema check, the D2 Python SDK (from PyPI, into target/sdk-venv) for the
# interoperability test, authlib with PyJWT (into target/oauth-venv) for the OAuth one, the
# MCP Python SDK (into target/mcp-venv) for the MCP one, and the browser of the consent-page
# tests (Debian's Chromium, playwright-core into target/browser).
# The end-to-end suite and the SDK test run on PostgreSQL, then again on SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
D2_TEST_CLICKHOUSE_URL=$(scripts/clickhouse.sh start)
export D2_TEST_CLICKHOUSE_URL
trap 'scripts/clickhouse.sh stop' EXIT
D2_TEST_OIDC_URL=$(scripts/oidc-provider.sh start)
export D2_TEST_OIDC_URL
trap 'scripts/oidc-provider.sh stop; scripts/clickhouse.sh stop' EXIT
D2_TEST_BROWSER=$(scripts/browser.sh)
export D2_TEST_BROWSER
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
scripts/check-deps.sh
scripts/check-schema.sh
CI=${CI:-true} cargo test --workspace --locked
CI=${CI:-true} D2_TEST_STORE=sqlite cargo test --locked -p d2-e2e
scripts/sdk-interop.sh
STORE=sqlite scripts/sdk-interop.sh
scripts/oauth-interop.sh
scripts/mcp-interop.sh
scripts/schemathesis.sh
