#!/usr/bin/env python3
"""A WebSocket server that tells each client the address it came from.

Usage: peer_server.py --port N --listen ADDR [--listen ADDR ...]

Run inside a test's own network namespace (so a fixed port is free). Binds
every ADDR on port N, then prints "ready" (the readiness signal). Each
message is answered with "<client ip> <message>", so a probe's
expect_message can check which source address or interface was used.
Exits when its stdin reaches end of file.
"""

import argparse
import asyncio
import sys

from websockets.asyncio.server import serve


async def answer_with_peer(websocket):
    peer = websocket.remote_address[0]
    async for message in websocket:
        await websocket.send(f"{peer} {message}")


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--listen", action="append", required=True)
    args = parser.parse_args()
    servers = [await serve(answer_with_peer, host, args.port).__aenter__() for host in args.listen]
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for server in servers:
        server.close()


asyncio.run(main())
