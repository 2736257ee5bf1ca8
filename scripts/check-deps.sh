#!/usr/bin/env bash
# The dependency rule: domain crates never depend on a web framework, a database driver
# or a network client.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
for crate in d2-kernel d2-accounts d2-tokens d2-audit d2-jwks d2-policy d2-events; do
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
[ "$status" -eq 0 ] && echo "check-deps: domain crates are free of actix-web, diesel, reqwest and tokio-postgres" >&2
exit "$status"
