#!/usr/bin/env bash
# Prints the path of a Python virtualenv with tests/<suite>/requirements.txt installed
# (suite `sdk` by default: the D2 SDK from PyPI and jwcrypto; `oauth`: authlib and PyJWT),
# creating or refreshing it in target/<suite>-venv as needed.
set -euo pipefail
cd "$(dirname "$0")/.."
suite=${1:-sdk}
venv=target/$suite-venv
requirements=tests/$suite/requirements.txt
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$venv/requirements.txt"; then
    rm -rf "$venv"
    mkdir -p target
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
    cp "$requirements" "$venv/requirements.txt"
fi
echo "$venv"
