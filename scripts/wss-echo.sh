# shellcheck shell=bash
# Sourced by the measuring scripts (peak-rss.sh, outputs-rss.sh): a P-256
# test CA with a leaf for IP 127.0.0.1 made with openssl, and a wss://
# echo server (Python `websockets`) presenting it.
#
#   wss_echo_certs DIR            writes DIR/ca.pem, DIR/leaf.pem, DIR/leaf.key
#   wss_echo_start PYTHON DIR     starts the server on 127.0.0.1, port 0;
#                                 sets server_pid and port (the caller kills it)
# Both call `die MESSAGE`, which the sourcing script defines.

wss_echo_certs() {
    local work="$1"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=wsprobe-rss-ca -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj /CN=127.0.0.1 -keyout "$work/leaf.key" -out "$work/leaf.csr" 2>/dev/null
    printf '%s\n' 'subjectAltName=IP:127.0.0.1' 'basicConstraints=CA:FALSE' \
        'keyUsage=digitalSignature' 'extendedKeyUsage=serverAuth' >"$work/leaf.ext"
    openssl x509 -req -in "$work/leaf.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
        -CAcreateserial -days 2 -extfile "$work/leaf.ext" -out "$work/leaf.pem" 2>/dev/null
}

wss_echo_start() {
    local python="$1" work="$2" server_py
    read -r -d '' server_py <<'PY' || true
import asyncio, ssl, sys
from websockets.asyncio.server import serve

async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)

async def main(cert, key):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    async with serve(echo, "127.0.0.1", 0, ssl=context) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

asyncio.run(main(sys.argv[1], sys.argv[2]))
PY
    "$python" -c "$server_py" "$work/leaf.pem" "$work/leaf.key" \
        >"$work/port" 2>"$work/server.log" </dev/null &
    server_pid=$!
    port=
    for _ in $(seq 100); do
        read -r port <"$work/port" 2>/dev/null || true
        [[ -n $port ]] && break
        kill -0 "$server_pid" 2>/dev/null || die "the server exited: $(cat "$work/server.log")"
        sleep 0.1
    done
    [[ $port =~ ^[0-9]+$ ]] || die "the server printed no port within 10 s: $(cat "$work/server.log")"
}
