#!/usr/bin/env bash
# The whole test suite, as CI runs it. Needs the Rust toolchain; starts the local
# PostgreSQL (installing it if missing) and installs the diesel CLI for the schema check.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
scripts/check-deps.sh
scripts/check-schema.sh
CI=${CI:-true} cargo test --workspace --locked
