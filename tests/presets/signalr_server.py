"""aiosignalr (PyPI) for tests/presets.rs: a SignalR JSON hub with an
`echo` method. Usage: signalr_server.py PORT. Prints "ready" once
listening; exits when stdin ends."""

import asyncio
import sys

from aiosignalr.server import Hub, ServerOptions, SignalRServer


class ProbeHub(Hub):
    async def echo(self, text: str) -> str:
        return text


async def main():
    port = int(sys.argv[1])
    await SignalRServer(ProbeHub, options=ServerOptions()).serve("127.0.0.1", port, path="/hub")
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


asyncio.run(main())
