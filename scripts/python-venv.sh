#!/usr/bin/env bash
# Prints the path of a Python virtualenv with tests/sdk/requirements.txt installed (the D2
# SDK from PyPI and jwcrypto), creating or refreshing it in target/sdk-venv as needed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/sdk-venv
if [ ! -x "$venv/bin/python" ] || ! cmp -s tests/sdk/requirements.txt "$venv/requirements.txt"; then
    rm -rf "$venv"
    mkdir -p target
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt >&2
    cp tests/sdk/requirements.txt "$venv/requirements.txt"
fi
echo "$venv"
