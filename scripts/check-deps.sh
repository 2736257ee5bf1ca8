#!/usr/bin/env bash
# The dependency rule: domain crates never depend on a web framework, a database driver
# or a network client.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every crate under crates/domain, found rather than listed, so a new domain is checked
# from its first commit.
crates=$(for manifest in crates/domain/*/Cargo.toml; do
    # The package's name: the first `name` of the manifest, in its [package] table.
    sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest" | head -n 1
done)
[ -n "$crates" ] || { echo "check-deps: no crates under crates/domain" >&2; exit 1; }
status=0
for crate in $crates; do
    for forbidden in actix-web diesel diesel-async reqwest tokio-postgres; do
        # `cargo tree -i` prints the path from the forbidden crate to ours, or nothing.
        path=$(cargo tree --locked -p "$crate" -e normal -i "$forbidden" 2>/dev/null || true)
        if [ -n "$path" ]; then
            echo "check-deps: $crate depends on $forbidden:" >&2
            echo "$path" >&2
            status=1
        fi
    done
done
[ "$status" -eq 0 ] && echo "check-deps: the domain crates ($(echo $crates | tr ' ' ',')) are free of actix-web, diesel, reqwest and tokio-postgres" >&2
exit "$status"
