#!/usr/bin/env bash
# Real application-protocol servers for tests/presets.rs (issue 13), at
# pinned versions. Idempotent: each step is skipped when its result is there.
#   /opt/wsprobe-proto/node_modules         graphql-ws, socket.io, aedes,
#                                           stomp-broker-js, @foundry-rs/anvil
#   /opt/wsprobe-proto/legacy/node_modules  subscriptions-transport-ws (graphql 15)
#   /opt/wsprobe-test (the shared venv)     python-socketio
#   /opt/wsprobe-proto/venv                 aiosignalr (its websockets pin
#                                           conflicts with the shared venv's)
#   Debian mosquitto, its service never started (policy-rc.d guard)
# The tests find everything at these paths; nothing is exported.
set -euo pipefail
# shellcheck source=.ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROTO=/opt/wsprobe-proto
VENV=/opt/wsprobe-test

npm_set() {
    local prefix=$1 stamp=$1/.installed
    shift
    local want="$*"
    if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
        echo "already installed in $prefix: $want"
        return
    fi
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --save-exact "$@"
    printf '%s' "$want" >"$stamp"
}

npm_set "$PROTO" \
    'graphql-ws@6.4.2' 'graphql@16.15.0' 'ws@8.18.3' \
    'socket.io@4.8.4' \
    'aedes@1.2.0' 'websocket-stream@5.5.2' \
    'stomp-broker-js@1.3.0' \
    '@foundry-rs/anvil@1.7.1'
npm_set "$PROTO/legacy" 'subscriptions-transport-ws@0.11.0' 'graphql@15.10.1'

"$VENV/bin/pip" install --quiet 'python-socketio==5.18.1' 'aiohttp==3.13.2'
if ! "$PROTO/venv/bin/python" -c '' 2>/dev/null; then
    /usr/bin/python3 -m venv --clear "$PROTO/venv"
fi
"$PROTO/venv/bin/pip" install --quiet 'aiosignalr==0.1.1'

if ! command -v mosquitto >/dev/null 2>&1 && [[ ! -x /usr/sbin/mosquitto ]]; then
    apt_install mosquitto ||
        { apt-get update && apt_install mosquitto; }
fi
/usr/sbin/mosquitto -h 2>&1 | head -1 || true
