#!/usr/bin/env bash
# Proxy figure: what a CONNECT hop through tinyproxy (and squid, for
# comparison, when installed) on loopback adds to an open. The same target
# (the Python echo server, ws:// and wss://) is opened directly and through
# each proxy, in turn, N times each (default 100), in the same run;
# printed: the median proxy_ms, the median open_ms of each path, the open's
# excess (the median of the paired differences, via proxy minus direct),
# and the median of each phase.
#
#   bash benches/proxy_overhead.sh          # N=300 bash ... for more runs
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${N:-100}
PY=${WSPROBE_TEST_PYTHON:-/opt/wsprobe-test/bin/python}
TINYPROXY=${WSPROBE_TEST_TINYPROXY:-$(command -v tinyproxy || echo /usr/bin/tinyproxy)}
SQUID=${WSPROBE_TEST_SQUID:-$(command -v squid || echo /usr/sbin/squid)}
[ -x "$TINYPROXY" ] || { echo "no tinyproxy (bash .ci/install-proxy.sh)"; exit 2; }

cargo build --release --locked --quiet
BIN=$PWD/target/release/wsprobe
DIR=$(mktemp -d /tmp/wsprobe-proxy-bench.XXXXXX)
cleanup() {
    for pid in ${PROXY_PID:-} ${SQUID_PID:-} ${WS_PID:-} ${WSS_PID:-} ${STDIN_PID:-}; do
        kill "$pid" 2>/dev/null || true
    done
    rm -rf "$DIR"
}
trap cleanup EXIT

# Test TLS material: a CA and a leaf for 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench-ca -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$DIR/leaf.key" -out "$DIR/leaf.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$DIR/leaf.ext"
openssl x509 -req -in "$DIR/leaf.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" \
    -CAcreateserial -days 2 -extfile "$DIR/leaf.ext" -out "$DIR/leaf.pem" 2>/dev/null

# The servers print their port, and exit when their stdin (this sleep) ends.
exec 3< <(exec sleep infinity 2> /dev/null)
STDIN_PID=$!
"$PY" tests/py/ws_server.py <&3 >"$DIR/ws.port" 2>/dev/null &
WS_PID=$!
"$PY" tests/py/ws_server.py --tls "$DIR/leaf.pem" "$DIR/leaf.key" <&3 >"$DIR/wss.port" 2>/dev/null &
WSS_PID=$!
port_of() { # FILE: the port a server printed, once it has
    for _ in $(seq 200); do
        [ -s "$1" ] && { head -1 "$1"; return; }
        sleep 0.05
    done
    echo "no port in $1" >&2
    exit 1
}
ws_port=$(port_of "$DIR/ws.port")
wss_port=$(port_of "$DIR/wss.port")

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_ready() { # PID PIDFILE PORT
    for _ in $(seq 400); do
        [ "$(tr -d ' \n' 2>/dev/null < "$2")" = "$1" ] &&
            "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $3), 1)" 2>/dev/null &&
            return
        sleep 0.05
    done
    echo "a proxy did not start (see $DIR)" >&2
    exit 1
}

tiny_port=$(free_port)
cat > "$DIR/tinyproxy.conf" <<CONF
Port $tiny_port
Listen 127.0.0.1
Allow 127.0.0.1
Timeout 30
MaxClients 32
LogLevel Warning
LogFile "$DIR/tinyproxy.log"
PidFile "$DIR/tinyproxy.pid"
CONF
"$TINYPROXY" -d -c "$DIR/tinyproxy.conf" </dev/null >/dev/null 2>&1 &
PROXY_PID=$!
wait_ready "$PROXY_PID" "$DIR/tinyproxy.pid" "$tiny_port"
paths=(direct "tinyproxy=http://127.0.0.1:$tiny_port")

if [ -x "$SQUID" ]; then
    squid_port=$(free_port)
    chmod 777 "$DIR" # squid, started as root, drops to its own user
    cat > "$DIR/squid.conf" <<CONF
http_port 127.0.0.1:$squid_port
pid_filename $DIR/squid.pid
cache_log $DIR/squid.log
access_log none
cache_store_log none
cache deny all
cache_mem 4 MB
coredump_dir $DIR
netdb_filename none
pinger_enable off
visible_hostname wsprobe-bench
shutdown_lifetime 0 seconds
acl CONNECT method CONNECT
http_access allow CONNECT
http_access deny all
CONF
    "$SQUID" -N -f "$DIR/squid.conf" </dev/null >/dev/null 2>&1 &
    SQUID_PID=$!
    wait_ready "$SQUID_PID" "$DIR/squid.pid" "$squid_port"
    paths+=("squid=http://127.0.0.1:$squid_port")
fi

run() { # URL [flags...]: one record, appended to $DIR/records
    "$BIN" probe "$@" --timeout-ms 5000 >> "$DIR/records" || true
}
for _ in $(seq "$N"); do
    for path in "${paths[@]}"; do
        via=()
        [ "$path" = direct ] || via=(--proxy "${path#*=}")
        run "ws://127.0.0.1:$ws_port/" --label "path=ws ${path%%=*}" "${via[@]}"
        run "wss://127.0.0.1:$wss_port/" --label "path=wss ${path%%=*}" --ca-file "$DIR/ca.pem" "${via[@]}"
    done
done

echo "tinyproxy $("$TINYPROXY" -v 2>&1 | awk '{print $2}')$([ -x "$SQUID" ] && "$SQUID" -v | awk 'NR==1 {print ", squid " $4}'), N=$N per path, $(nproc) CPUs, loopback"
python3 - "$DIR/records" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    assert r["reason"] is None, r
    runs.setdefault(r["labels"]["path"], []).append(r["meta"]["timings"])
med = statistics.median
proxies = sorted({path.split()[1] for path in runs} - {"direct"})
for scheme in ("ws", "wss"):
    direct = runs[f"{scheme} direct"]
    print(f"{scheme}://  open_ms median direct {med(t['open_ms'] for t in direct):.3f}")
    for proxy in proxies:
        via = runs[f"{scheme} {proxy}"]
        pairs = [p["open_ms"] - d["open_ms"] for d, p in zip(direct, via)]
        print(f"  via {proxy}: proxy_ms median {med(t['proxy_ms'] for t in via):.3f}"
              f"  open_ms median {med(t['open_ms'] for t in via):.3f}"
              f"  excess (median of paired differences) {med(pairs):.3f} ms")
    for phase in ("connect_ms", "proxy_ms", "tls_ms", "upgrade_ms"):
        if phase in direct[0] or phase == "proxy_ms":
            cells = [f"direct {med(t.get(phase, 0) for t in direct):8.3f}"]
            cells += [f"{p} {med(t[phase] for t in runs[f'{scheme} {p}']):8.3f}" for p in proxies]
            print(f"    {phase:<11} median  " + "  ".join(cells))
PY
