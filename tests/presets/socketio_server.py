"""python-socketio (PyPI) on aiohttp for tests/presets.rs: a real Socket.IO
v4 server. Binds 127.0.0.1 on a port the kernel picks, prints it alone on
the first line of stdout, and exits when stdin ends."""

import asyncio
import sys

import socketio
from aiohttp import web


async def main():
    sio = socketio.AsyncServer(async_mode="aiohttp")
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


asyncio.run(main())
