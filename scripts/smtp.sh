#!/usr/bin/env bash
# A private SMTP server for the tests: tests/smtp/server.py on aiosmtpd (pinned in
# tests/smtp/requirements.txt, installed from PyPI into target/smtp-venv), run as a
# background process on a free port. Every message it receives becomes one file,
# $dir/messages/000001.eml, 000002.eml, ... in the order of arrival. While $dir/refuse
# exists it answers DATA with 451 (try again later), or 550 when the file contains
# `permanent`; while $dir/stall exists it answers DATA that many seconds late. AUTH
# succeeds for the `user:password` in $dir/auth (see the server).
#   scripts/smtp.sh start   a fresh server (no messages); prints its URL, smtp://127.0.0.1:<port>,
#                           alone on stdout (also written to $dir/url)
#   scripts/smtp.sh stop
# SMTP_DIR chooses the directory (default target/smtp), so each test can have a server of
# its own.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${SMTP_DIR:-$PWD/target/smtp}"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The virtualenv, created or refreshed when the requirements change. Tests start servers in
# parallel: one of them installs, the others wait on the lock.
venv() {
    local requirements=tests/smtp/requirements.txt venv=target/smtp-venv
    mkdir -p target
    (
        if command -v flock >/dev/null 2>&1; then flock 9; fi
        if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$venv/requirements.txt"; then
            echo "smtp: installing aiosmtpd into $venv" >&2
            rm -rf "$venv"
            python3 -m venv "$venv" >&2
            "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
            cp "$requirements" "$venv/requirements.txt"
        fi
    ) 9> target/smtp-venv.lock
    echo "$venv"
}

# Whether the process runs: a server that exited stays a zombie until whoever adopted it
# reaps it, which may take a while, and `kill -0` counts zombies. Linux tells them apart in
# /proc/<pid>/stat (the state follows the command's name in parentheses: Z for a zombie).
running() {
    if [ -d /proc/self ]; then
        local state
        state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d ' ' -f 1) || return 1
        [ -n "$state" ] && [ "$state" != Z ]
    else
        kill -0 "$1" 2>/dev/null
    fi
}

stop() {
    if [ -f "$dir/pid" ]; then
        local pid
        pid=$(cat "$dir/pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            running "$pid" || break
            sleep 0.1
        done
        if running "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
        rm -f "$dir/pid"
    fi
}

start() {
    local python port url
    python="$(venv)/bin/python"
    stop
    rm -rf "$dir/messages" "$dir/refuse" "$dir/stall" "$dir/auth" "$dir/url"
    mkdir -p "$dir/messages"
    port=$(free_port)
    url="smtp://127.0.0.1:$port"
    nohup "$python" tests/smtp/server.py --port "$port" --dir "$dir" > "$dir/server.log" 2>&1 &
    echo $! > "$dir/pid"
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$url" > "$dir/url"
            echo "smtp: ready at $url" >&2
            echo "$url"
            return 0
        fi
        running "$(cat "$dir/pid")" || break
        sleep 0.1
    done
    echo "smtp: the server did not start; its log follows" >&2
    tail -n 40 "$dir/server.log" >&2 || true
    stop
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
