#!/usr/bin/env bash
# A private ClickHouse server for the tests: installed from Debian's packages when
# missing, run as a background process with its own data directory and free ports.
#   scripts/clickhouse.sh start     a fresh server; prints the HTTP URL (also written to $dir/url)
#   scripts/clickhouse.sh stop
#   scripts/clickhouse.sh restart   the same server again: same data, same ports
# CLICKHOUSE_DIR chooses the directory (default target/clickhouse), so tests that stop and
# restart a server have one of their own.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${CLICKHOUSE_DIR:-$PWD/target/clickhouse}"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

stop() {
    if [ -f "$dir/pid" ]; then
        kill "$(cat "$dir/pid")" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$(cat "$dir/pid")" 2>/dev/null || true
        rm -f "$dir/pid"
    fi
}

start() {
    if ! command -v clickhouse-server >/dev/null 2>&1; then
        echo "clickhouse: installing clickhouse-server and clickhouse-client" >&2
        apt-get update -qq && apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
    fi
    stop
    rm -rf "$dir"
    mkdir -p "$dir/data" "$dir/tmp" "$dir/log" "$dir/user_files" "$dir/format_schemas"
    local http tcp interserver
    http=$(free_port)
    tcp=$(free_port)
    interserver=$(free_port)
    cat > "$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
    cat > "$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>$dir/log/server.log</log><errorlog>$dir/log/error.log</errorlog><console>0</console></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$http</http_port>
    <tcp_port>$tcp</tcp_port>
    <interserver_http_port>$interserver</interserver_http_port>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>268435456</mark_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
XML
    echo "http://127.0.0.1:$http" > "$dir/address"
    launch
}

# Runs the server configured in $dir and waits until it answers.
launch() {
    nohup clickhouse-server --config-file="$dir/config.xml" > "$dir/log/stdout.log" 2>&1 &
    echo $! > "$dir/pid"
    local url
    url=$(cat "$dir/address")
    for _ in $(seq 1 150); do
        if curl -fs "$url/ping" >/dev/null 2>&1; then
            echo "$url" > "$dir/url"
            echo "clickhouse: ready at $url" >&2
            echo "$url"
            return 0
        fi
        sleep 0.2
    done
    echo "clickhouse: the server did not start; its log follows" >&2
    tail -n 40 "$dir/log/stdout.log" "$dir/log/error.log" >&2 2>/dev/null || true
    stop
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    restart) stop; launch ;;
    *) echo "usage: $0 start|stop|restart" >&2; exit 2 ;;
esac
