"""A third-party client for `wsprobe reflect`'s tests: Python `websockets`.

usage: reflect_client.py URL [--ca FILE] [--protocol NAME] [--token T]
                         [--wait-close]

Echo mode (default): sends a text message (non-ASCII), a 51,200-byte
binary message of every byte value, a text message in three fragments and
a ping, checks each echo, closes with 1000, and prints one JSON line:
  {"ok": true, "protocol": ..., "close_code": 1000}
--wait-close: prints {"open": true} once connected, then waits for the
server to close and prints {"close_code": N} (SIGTERM's 1001).
Any failure prints {"ok": false, "error": "..."} and exits 1.
"""

import argparse
import asyncio
import json
import ssl
import sys

from websockets.asyncio.client import connect


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--ca")
    parser.add_argument("--protocol", action="append", default=[])
    parser.add_argument("--token")
    parser.add_argument("--wait-close", action="store_true")
    args = parser.parse_args()

    context = None
    if args.ca:
        context = ssl.create_default_context(cafile=args.ca)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    async with connect(
        args.url,
        ssl=context,
        subprotocols=args.protocol or None,
        additional_headers=headers,
        compression=None,
        max_size=None,
        open_timeout=5,
    ) as ws:
        if args.wait_close:
            print(json.dumps({"open": True}), flush=True)
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except Exception:
                pass
            print(json.dumps({"close_code": ws.close_code}), flush=True)
            return
        text = "h\u00e9llo, \u4e16\u754c"
        await ws.send(text)
        assert await ws.recv() == text, "text echo"
        blob = bytes(range(256)) * 200
        await ws.send(blob)
        assert await ws.recv() == blob, "binary echo"
        await ws.send(["frag", "mented ", "\u00e9"])
        assert await ws.recv() == "fragmented \u00e9", "fragmented echo"
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 5)
        protocol = ws.subprotocol
        await ws.close(1000, "done")
        print(json.dumps({"ok": True, "protocol": protocol,
                          "close_code": ws.close_code}), flush=True)


try:
    asyncio.run(main())
except Exception as e:  # the test reads the reason
    print(json.dumps({"ok": False, "error": repr(e)}), flush=True)
    sys.exit(1)
