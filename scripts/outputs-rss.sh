#!/usr/bin/env bash
# Peak RSS (VmHWM) of `wsprobe run` with 10 wss:// round-trip probes at
# interval 1000 ms against a local echo server (Python `websockets`, TLS
# with a CA and a 127.0.0.1 leaf made here with openssl), after DURATION
# seconds (default 20, env WSPROBE_RSS_SECONDS), in two configurations
# measured one after the other in the same run:
#
#   ndjson only     records to a file, no Prometheus output (the baseline)
#   both outputs    records to a file, prometheus_textfile and
#                   prometheus_listen, /metrics scraped every second
#
# usage: scripts/outputs-rss.sh [BINARY]
#   BINARY defaults to the static x86_64 musl build, made with
#   scripts/build-arm.sh x86_64-musl. Target (musl): both outputs <= 3 MB.
# It reports and does not judge: exit 0 unless a build, the server or the
# agent failed. The server's Python is
# ${WSPROBE_TEST_PYTHON:-/opt/wsprobe-test/bin/python}.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${WSPROBE_TEST_PYTHON:-/opt/wsprobe-test/bin/python}"
seconds="${WSPROBE_RSS_SECONDS:-20}"
budget_kb=3072

die() { printf 'outputs-rss: %s\n' "$*" >&2; exit 1; }

[[ $seconds =~ ^[1-9][0-9]*$ ]] || die "WSPROBE_RSS_SECONDS=$seconds: expected a positive integer"
command -v openssl >/dev/null || die "openssl not found"
command -v curl >/dev/null || die "curl not found"
"$python" -c 'import websockets' 2>/dev/null || die "$python cannot import websockets"

bin="${1:-}"
if [[ -z $bin ]]; then
    line="$(scripts/build-arm.sh x86_64-musl | tail -n 1)" || die "the musl build failed"
    bin="${line% *}"
fi
[[ -x $bin ]] || die "no binary at $bin"

work="$(mktemp -d "${TMPDIR:-/tmp}/wsprobe-outputs-rss.XXXXXX")"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=scripts/wss-echo.sh
. scripts/wss-echo.sh
wss_echo_certs "$work"
server_pid=
wss_echo_start "$python" "$work"
pids+=("$server_pid")

probes() {
    local i sep=''
    for i in $(seq 10); do
        printf '%s{"name": "p%s", "url": "wss://127.0.0.1:%s/", "interpretation": "round_trip_latency", "send_message": "ping", "interval_ms": 1000, "timeout_ms": 1000, "labels": {"site": "s%s"}, "tls": {"ca_file": "%s"}}' \
            "$sep" "$i" "$port" "$i" "$work/ca.pem"
        sep=','
    done
}

measure() {
    local name="$1" output="$2" pid addr=''
    printf '{"output": %s, "probes": [%s]}\n' "$output" "$(probes)" >"$work/$name.json"
    "$bin" run -c "$work/$name.json" >/dev/null 2>"$work/$name.log" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq "$seconds"); do
        sleep 1
        addr="$(sed -n 's|^wsprobe: metrics at http://\(.*\)/metrics$|\1|p' "$work/$name.log")"
        if [[ -n $addr ]]; then
            curl -sf "http://$addr/metrics" >/dev/null || die "$name: scrape failed"
        fi
    done
    kill -0 "$pid" 2>/dev/null || die "$name: the agent exited: $(cat "$work/$name.log")"
    local hwm
    hwm="$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")"
    kill -TERM "$pid"
    wait "$pid" || true
    local records
    records="$(grep -c '"reason":null' "$work/$name.ndjson" || true)"
    printf '  %-13s %5s KB peak RSS  (%s good records)\n' "$name" "$hwm" "$records"
    echo "$hwm" >"$work/$name.hwm"
}

echo "peak RSS of \`wsprobe run\`, 10 wss:// round-trip probes, ${seconds} s, $bin ($(stat -c %s "$bin") bytes):"
measure ndjson-only "{\"ndjson\": \"$work/ndjson-only.ndjson\"}"
measure both-outputs "{\"ndjson\": \"$work/both-outputs.ndjson\", \"prometheus_textfile\": \"$work/wsprobe.prom\", \"prometheus_listen\": \"127.0.0.1:0\"}"
base="$(cat "$work/ndjson-only.hwm")"
both="$(cat "$work/both-outputs.hwm")"
verdict=met
((both <= budget_kb)) || verdict=MISSED
printf '  the Prometheus outputs cost %s KB; both outputs %s KB, target <= %s KB: %s\n' \
    "$((both - base))" "$both" "$budget_kb" "$verdict"
