#!/usr/bin/env python3
"""A third-party WebSocket server for wsprobe's tests (Python `websockets`).

Usage: ws_server.py [--subprotocol NAME] [--require-auth TOKEN] [--tls CERT KEY]

Binds 127.0.0.1 on a port the kernel picks and prints that port alone on
the first line of stdout (the readiness signal). Every connection echoes
each message back as it came: text as text, binary as binary.

--subprotocol NAME   select NAME when the client offers it (the library
                     answers 400 when the client offers none or others)
--require-auth TOKEN answer 401 unless `Authorization: Bearer TOKEN`
--tls CERT KEY       serve wss:// with this PEM certificate chain and key

Exits when its stdin reaches end of file, so a test that drops its handle
on the child (and with it the pipe) ends the server.
"""

import argparse
import asyncio
import http
import logging
import os
import ssl
import sys
import threading

from websockets.asyncio.server import serve


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subprotocol", metavar="NAME")
    parser.add_argument("--require-auth", metavar="TOKEN")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    return parser.parse_args(argv)


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


def auth_checker(token):
    expected = f"Bearer {token}"

    def process_request(connection, request):
        if request.headers.get("Authorization") != expected:
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "unauthorized\n")
        return None

    return process_request


def exit_on_stdin_eof():
    # Blocking read on a helper thread: works for pipes and terminals alike.
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


async def main(args):
    options = {}
    if args.subprotocol:
        options["subprotocols"] = [args.subprotocol]
    if args.require_auth:
        options["process_request"] = auth_checker(args.require_auth)
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls[0], args.tls[1])
        options["ssl"] = context

    async with serve(echo, "127.0.0.1", 0, **options) as server:
        port = server.sockets[0].getsockname()[1]
        sys.stdout.write(f"{port}\n")
        sys.stdout.flush()
        await server.serve_forever()


if __name__ == "__main__":
    # Refused handshakes (400, 401, TLS alerts) are what the tests provoke;
    # the library would log each with a traceback on stderr.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    threading.Thread(target=exit_on_stdin_eof, daemon=True).start()
    asyncio.run(main(parse_args(sys.argv[1:])))
