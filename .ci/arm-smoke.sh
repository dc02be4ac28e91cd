#!/usr/bin/env bash
# ARM smoke test: build the static aarch64 (or armv7) musl release binary
# and run it under qemu-user against real servers on 127.0.0.1:
#
#   1. wsprobe --version
#   2. ws://  round trip   (probe --send hi --expect hi) against an echo server
#   3. wss:// handshake    (probe --ca-file) against the same server over TLS,
#                          with a CA and a localhost/127.0.0.1 leaf made here
#
# The servers are the Python `websockets` library (a third-party
# implementation) from ${WSPROBE_TEST_PYTHON:-/opt/wsprobe-test/bin/python};
# the default venv is created if it is missing. Each record line is checked
# with Python's json module: reason null, value a number, and for wss
# meta.tls_version present.
#
# usage: bash .ci/arm-smoke.sh [aarch64|armv7]   (default aarch64; root on
#        Debian 12; installs what it needs through scripts/install-cross-deps.sh)
# Honours CARGO_TARGET_DIR. Exit 0 when every check passed, 1 otherwise.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=/opt/wsprobe-test
PY="${WSPROBE_TEST_PYTHON:-$VENV/bin/python}"
QEMU_TIMEOUT=60 # seconds for one run under qemu, a hang guard only
ARCH="${1:-aarch64}"
case "$ARCH" in
    aarch64) QEMU=qemu-aarch64 DEPS_FLAGS=() ;;
    armv7) QEMU=qemu-arm DEPS_FLAGS=(--armv7) ;;
    *) echo "usage: $0 [aarch64|armv7]" >&2; exit 2 ;;
esac

say() { printf 'arm-smoke: %s\n' "$*"; }
die() { printf 'arm-smoke: FAIL: %s\n' "$*" >&2; exit 1; }

# --- prerequisites ------------------------------------------------------------
scripts/install-cross-deps.sh "${DEPS_FLAGS[@]}"
command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"

has_websockets() {
    "$1" -c 'import sys, websockets; sys.exit(websockets.__version__ != "15.0.1")' 2>/dev/null
}
if ! has_websockets "$PY"; then
    [[ $PY == "$VENV/bin/python" ]] ||
        die "WSPROBE_TEST_PYTHON=$PY has no websockets 15.0.1"
    say "creating $VENV with websockets==15.0.1"
    base_python=/usr/bin/python3
    [[ -x $base_python ]] || base_python="$(command -v python3)"
    "$VENV/bin/python" -c '' 2>/dev/null || "$base_python" -m venv --clear "$VENV" ||
        die "python3 -m venv failed (apt-get install python3-venv)"
    "$VENV/bin/python" -m pip install --quiet 'websockets==15.0.1'
    has_websockets "$PY" || die "websockets 15.0.1 did not install into $VENV"
fi

# --- build --------------------------------------------------------------------
build_line="$(scripts/build-arm.sh "$ARCH" | tail -n 1)" || die "the $ARCH build failed" # "<path> <bytes>"
BIN="${build_line% *}"
[[ -x $BIN ]] || die "no binary at $BIN"
say "binary: $BIN (${build_line##* } bytes)"

# --- scratch dir, servers, cleanup ----------------------------------------------
tmp="$(mktemp -d /tmp/wsprobe-arm-smoke.XXXXXX)"
server_pids=()
cleanup() {
    local pid
    for pid in "${server_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cat >"$tmp/echo_server.py" <<'PY'
"""Echo server: binds 127.0.0.1 port 0, prints the port (the readiness
signal), echoes every message as it came. argv: [CERT KEY] for TLS."""
import asyncio, os, ssl, sys, threading, time
from websockets.asyncio.server import serve

def watchdog(parent):
    # Safety net if the smoke script dies without running its trap:
    # exit when the parent is gone, and after 10 minutes in any case.
    end = time.monotonic() + 600
    while os.getppid() == parent and time.monotonic() < end:
        time.sleep(0.5)
    os._exit(0)

async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)

async def main():
    options = {}
    if len(sys.argv) == 3:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[1], sys.argv[2])
        options["ssl"] = context
    async with serve(echo, "127.0.0.1", 0, **options) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

threading.Thread(target=watchdog, args=(os.getppid(),), daemon=True).start()
asyncio.run(main())
PY

cat >"$tmp/check_record.py" <<'PY'
"""Checks the record lines on stdin. argv: yes|no (wss), interpretation."""
import json, sys

tls, interpretation = sys.argv[1] == "yes", sys.argv[2]
lines = [line for line in sys.stdin.read().splitlines() if line.strip()]
if len(lines) != 1:
    sys.exit(f"expected 1 record line, got {len(lines)}")
for line in lines:
    try:
        record = json.loads(line)
    except ValueError as e:
        sys.exit(f"not JSON: {e}")
    if not isinstance(record, dict):
        sys.exit("record is not a JSON object")
    if "reason" not in record:
        sys.exit("reason missing")
    if record["reason"] is not None:
        sys.exit(f"reason is {record['reason']!r}, expected null")
    value = record.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        sys.exit(f"value is {value!r}, expected a number")
    if record.get("interpretation") != interpretation:
        sys.exit(f"interpretation is {record.get('interpretation')!r}, expected {interpretation}")
    meta = record.get("meta")
    if not isinstance(meta, dict):
        sys.exit("meta missing")
    if tls and not isinstance(meta.get("tls_version"), str):
        sys.exit("meta.tls_version missing")
PY

# start_server NAME [CERT KEY]: start a server, wait for the port it prints,
# set PORT.
start_server() {
    local name=$1 fd pid
    shift
    exec {fd}< <(exec "$PY" "$tmp/echo_server.py" "$@" 2>"$tmp/$name.log")
    pid=$!
    server_pids+=("$pid")
    PORT=""
    read -r -t 30 -u "$fd" PORT || true
    exec {fd}<&-
    if ! [[ $PORT =~ ^[0-9]+$ ]]; then
        cat "$tmp/$name.log" >&2 || true
        die "$name server did not report a port"
    fi
    say "$name server on 127.0.0.1:$PORT (pid $pid)"
}

# --- test CA and leaf -----------------------------------------------------------
(
    cd "$tmp"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=test-ca -keyout ca.key -out ca.pem
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj /CN=localhost -keyout leaf.key -out leaf.csr
    printf '%s\n' \
        'subjectAltName = DNS:localhost, IP:127.0.0.1' \
        'basicConstraints = critical, CA:FALSE' \
        'keyUsage = critical, digitalSignature' \
        'extendedKeyUsage = serverAuth' >leaf.ext
    openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -CAserial ca.srl -days 2 -extfile leaf.ext -out leaf.pem
) >"$tmp/openssl.log" 2>&1 || { cat "$tmp/openssl.log" >&2; die "openssl could not make the test certificates"; }

start_server ws
ws_port=$PORT
start_server wss "$tmp/leaf.pem" "$tmp/leaf.key"
wss_port=$PORT

# --- checks ---------------------------------------------------------------------
passed=0
failed=0
pass() { passed=$((passed + 1)); say "PASS: $*"; }
fail() { failed=$((failed + 1)); printf 'arm-smoke: FAIL: %s\n' "$*" >&2; }

# 1. --version
if version="$(timeout "$QEMU_TIMEOUT" "$QEMU" "$BIN" --version 2>&1)" &&
    [[ $version =~ ^wsprobe\ [0-9] ]]; then
    pass "$QEMU wsprobe --version: $version"
else
    fail "$QEMU wsprobe --version printed: $version"
fi

# check_record NAME TLS(yes|no) INTERPRETATION -- probe args...
# Runs the probe under qemu, prints its stdout, checks every record line.
check_record() {
    local name=$1 tls=$2 interpretation=$3 rc=0 out
    shift 4
    out="$(timeout "$QEMU_TIMEOUT" "$QEMU" "$BIN" probe "$@" 2>"$tmp/$name.stderr")" || rc=$?
    say "$name record(s):"
    printf '%s\n' "$out"
    if ((rc != 0)); then
        cat "$tmp/$name.stderr" >&2
        fail "$name: wsprobe exited $rc"
        return
    fi
    local problem
    if problem="$(printf '%s\n' "$out" | "$PY" "$tmp/check_record.py" "$tls" "$interpretation" 2>&1)"; then
        pass "$name"
    else
        cat "$tmp/$name.stderr" >&2
        fail "$name: $problem"
    fi
}

# 2. ws:// round trip through the echo server.
check_record ws-round-trip no round_trip_latency -- \
    "ws://127.0.0.1:$ws_port/" --interpretation round_trip_latency --send hi --expect hi \
    --timeout-ms 10000

# 3. wss:// handshake, certificate checked against the test CA (IP SAN).
check_record wss-handshake yes handshake_latency -- \
    "wss://127.0.0.1:$wss_port/" --ca-file "$tmp/ca.pem" --timeout-ms 10000

echo "arm-smoke ($ARCH): $passed passed, $failed failed"
((failed == 0))
