# Thin recipes over the scripts; each works without `just` too (see the comments).

# cargo run --release --bin d2-api
run:
    cargo run --release --bin d2-api

# ./scripts/test.sh
test:
    ./scripts/test.sh

# formatting, lints and the fast checks, without the full suite
check:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    ./scripts/check-deps.sh

# ./scripts/bench.sh (release build, wrk on the hot routes beside a bare actix handler)
bench:
    ./scripts/bench.sh

# ./scripts/bench-oauth.sh (release build, D2's token endpoint and introspection beside oidc-provider)
bench-oauth:
    ./scripts/bench-oauth.sh

# criterion benchmarks of the token hot path
bench-tokens:
    cargo bench -p d2-tokens --features testing --bench verify

# apply migrations to the configured database
migrate:
    cargo run --release --bin d2ctl -- migrate

# create an account and print its first admin token
bootstrap:
    cargo run --release --bin d2ctl -- bootstrap

# start the local services the tests need
services:
    ./scripts/services.sh
