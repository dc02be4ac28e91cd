#!/usr/bin/env bash
# Happy Eyeballs figure (root only): time to open a ws:// socket when the
# name has an IPv6 address that is black-holed (SYNs dropped) and an IPv4
# one that works, against the same server by an IPv4-only name. Median and
# p95 over N runs (default 30), in a private network namespace.
#
#   sudo bash benches/happy_eyeballs.sh        # N=50 bash ... for more runs
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${N:-30}
PY=${WSPROBE_TEST_PYTHON:-/opt/wsprobe-test/bin/python}
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)"; exit 2; }

cargo build --release --locked --quiet
BIN=$PWD/target/release/wsprobe
NS=wsp-he-bench-$$
cleanup() {
    [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null || true
    [ -n "${STDIN_PID:-}" ] && kill "$STDIN_PID" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "/etc/netns/$NS"
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
mkdir -p "/etc/netns/$NS"
printf '::1 dual.test\n127.0.0.1 dual.test\n127.0.0.1 v4.test\n' > "/etc/netns/$NS/hosts"
ip netns exec "$NS" nft add table inet t
ip netns exec "$NS" nft add chain inet t input '{ type filter hook input priority 0; policy accept; }'
ip netns exec "$NS" nft add rule inet t input meta nfproto ipv6 tcp dport 8080 drop

# The server exits when its stdin (this sleep) ends; neither may hold our
# stdout open, or a pipe reading this script would never see its end.
exec 3< <(exec sleep infinity 2> /dev/null)
STDIN_PID=$!
coproc SERVER { ip netns exec "$NS" "$PY" tests/py/peer_server.py --port 8080 --listen ::1 --listen 127.0.0.1 <&3 2>/dev/null; }
read -r ready <&"${SERVER[0]}"
[ "$ready" = ready ] || { echo "server did not start"; exit 1; }

open_ms() {
    ip netns exec "$NS" "$BIN" probe "$1" --timeout-ms 5000 \
        | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["reason"] is None, r; print(r["meta"]["timings"]["open_ms"])'
}
: > /tmp/he-dual.$$; : > /tmp/he-v4.$$
for _ in $(seq "$N"); do
    open_ms ws://dual.test:8080/ >> /tmp/he-dual.$$
    open_ms ws://v4.test:8080/ >> /tmp/he-v4.$$
done
python3 - /tmp/he-dual.$$ /tmp/he-v4.$$ "$N" <<'PY'
import statistics, sys
def load(p): return sorted(float(x) for x in open(p))
dual, v4, n = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
p95 = lambda xs: xs[min(len(xs) - 1, int(0.95 * len(xs)))]
print(f"runs: {n}")
print(f"IPv4-only name          open_ms median {statistics.median(v4):8.3f}  p95 {p95(v4):8.3f}")
print(f"dual stack, v6 dropped  open_ms median {statistics.median(dual):8.3f}  p95 {p95(dual):8.3f}")
print(f"difference of medians   {statistics.median(dual) - statistics.median(v4):8.3f} ms (target: within 300 ms)")
PY
rm -f /tmp/he-dual.$$ /tmp/he-v4.$$
