#!/usr/bin/env bash
# The browser of the end-to-end tests: Debian's Chromium (installed with apt-get when
# /usr/bin/chromium is missing) and tests/browser (playwright-core, with the Node.js 22 npm
# has for the platform, else the machine's node), installed into target/browser with
# `npm ci`, again only when the lock file changes. Prints the directory holding person.mjs
# and its packages (what D2_TEST_BROWSER names).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="$PWD/target/browser"

if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    echo "browser: installing Debian's chromium" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >&2
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "browser: needs Node.js and npm" >&2
    exit 1
fi
mkdir -p "$dir"
(
    flock 9
    if ! cmp -s tests/browser/package.json "$dir/package.json" \
        || ! cmp -s tests/browser/package-lock.json "$dir/package-lock.json" \
        || [ ! -d "$dir/node_modules" ]; then
        echo "browser: installing its npm packages into $dir" >&2
        rm -rf "$dir/node_modules" "$dir/package.json" "$dir/package-lock.json"
        cp tests/browser/package.json tests/browser/package-lock.json "$dir/"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >&2
    fi
    cp tests/browser/person.mjs "$dir/person.mjs.new"
    mv "$dir/person.mjs.new" "$dir/person.mjs"
) 9>"$dir/.install.lock"
echo "$dir"
