#!/usr/bin/env python3
"""Fault soak: the real agent, 100+ probes, while the world misbehaves.

Runs `wsprobe run` against local WebSocket servers (raw asyncio, no
third-party code) that cycle through faults on a schedule - restart
(stop listening, come back), accept and hang, reset mid-frame, answer
slowly - while the record file sits on a small tmpfs that is filled and
freed, SIGHUP arrives every few seconds alternating a valid and an invalid
config, and the agent is frozen (SIGSTOP/SIGCONT) once. It reports the
records per probe against the ticks, the records the writer said it
dropped, fds, threads and RSS at start and end, the largest gap between a
probe's records outside the freeze and the full disk, and any panic
record. Figures, not a test: see docs/reliability.md.

usage (root, for the tmpfs):
  /opt/wsprobe-test/bin/python scripts/soak.py [--minutes 10] [--probes 100]
      [--binary target/release/wsprobe] [--interval-ms 2000]

Not covered yet: a resolver that stops answering (the probes use literal
addresses), and a collector that stops reading stdout (it waits for the
non-stalling writer of issue 12 item 2: records would go to stdout through
a pipe this script stops reading, where they now go to the tmpfs file).
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MODES = ["ok", "slow", "ok", "hang", "ok", "reset", "ok", "restart"]


class Server:
    """One WebSocket echo server whose behaviour changes on a schedule."""

    def __init__(self, loop, port, slow_s):
        self.loop, self.port, self.slow_s = loop, port, slow_s
        self.mode = "ok"
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self):
        if self.server:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def serve(self, reader, writer):
        mode = self.mode
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if mode == "hang":
                await asyncio.sleep(3600)
                return
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            while True:
                b0, b1 = await reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", await reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", await reader.readexactly(8))[0]
                mask = await reader.readexactly(4)
                data = bytes(c ^ mask[i % 4] for i, c in enumerate(await reader.readexactly(n)))
                opcode = b0 & 0x0F
                if opcode == 0x8:
                    writer.write(bytes([0x88, len(data)]) + data)
                    await writer.drain()
                    return
                if opcode != 0x1:
                    continue
                if mode == "slow":
                    await asyncio.sleep(self.slow_s)
                frame = bytes([0x81, len(data)]) + data
                if mode == "reset":
                    writer.write(frame[:2])
                    await writer.drain()
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                writer.write(frame)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, StopIteration, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


def proc_stats(pid, samples=20):
    """fds, threads and RSS over two seconds: each [least, most], as runs
    in flight hold a socket each."""
    seen = {"fds": [], "threads": [], "rss_kb": []}
    for _ in range(samples):
        status = open(f"/proc/{pid}/status").read()
        field = lambda name: int(next(l.split()[1] for l in status.splitlines() if l.startswith(name)))
        seen["fds"].append(len(os.listdir(f"/proc/{pid}/fd")))
        seen["threads"].append(field("Threads:"))
        seen["rss_kb"].append(field("VmRSS:"))
        time.sleep(2 / samples)
    return {k: [min(v), max(v)] for k, v in seen.items()}


def config(probes, ports, out, interval_ms, valid=True):
    if not valid:
        return '{"probes": [ this is not JSON'
    return json.dumps({
        "output": {"ndjson": out},
        "probes": [
            {
                "name": f"p{i:03}",
                "url": f"ws://127.0.0.1:{ports[i % len(ports)]}/soak",
                "interpretation": "round_trip_latency",
                "send_message": "ping",
                "expect_message": "ping",
                "timeout_ms": interval_ms // 2,
                "interval_ms": interval_ms,
            }
            for i in range(probes)
        ],
    })


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--probes", type=int, default=100)
    ap.add_argument("--servers", type=int, default=4)
    ap.add_argument("--interval-ms", type=int, default=2000)
    ap.add_argument("--binary", default="target/release/wsprobe")
    ap.add_argument("--freeze-s", type=float, default=30)
    ap.add_argument("--hup-every-s", type=float, default=5)
    args = ap.parse_args()
    duration = args.minutes * 60
    interval = args.interval_ms / 1000

    work = tempfile.mkdtemp(prefix="wsprobe-soak-")
    disk = os.path.join(work, "disk")
    os.mkdir(disk)
    # Room for every record of the run (about 450 bytes each) and a half
    # again: the disk is full only while the filler is there.
    ticks = args.probes * duration * 1000 / args.interval_ms
    size_kib = max(8192, int(ticks * 700 / 1024))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", disk], check=True)
    out = os.path.join(disk, "records.ndjson")
    ports = []
    for _ in range(args.servers):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
        s.close()
    cfg = os.path.join(work, "config.json")
    open(cfg, "w").write(config(args.probes, ports, out, args.interval_ms))

    loop = asyncio.new_event_loop()
    servers = [Server(loop, p, slow_s=interval * 0.4) for p in ports]
    for s in servers:
        loop.run_until_complete(s.start())
    threading.Thread(target=loop.run_forever, daemon=True).start()

    faults = []  # (start, end, what) on the monotonic clock
    stderr_path = os.path.join(work, "stderr.log")
    agent = subprocess.Popen([args.binary, "run", "-c", cfg], stdout=subprocess.DEVNULL,
                             stderr=open(stderr_path, "w"))
    t0 = time.monotonic()
    wall0 = time.time()
    time.sleep(min(60, duration / 6))
    start_stats = proc_stats(agent.pid)

    freeze_at = duration * 0.5
    disk_at = duration * 0.3
    disk_for = min(60, duration * 0.1)
    mode_every = max(10, duration / 40)
    frozen = disk_full = False
    filler = os.path.join(disk, "filler")
    next_hup = next_mode = time.monotonic()
    hups = 0
    mode_step = 0
    while (now := time.monotonic() - t0) < duration:
        if now >= next_hup - t0:
            hups += 1
            open(cfg, "w").write(config(args.probes, ports, out, args.interval_ms, valid=hups % 2 == 0))
            agent.send_signal(signal.SIGHUP)
            next_hup += args.hup_every_s
        if now >= next_mode - t0:
            mode_step += 1
            for i, s in enumerate(servers):
                mode = MODES[(mode_step + i) % len(MODES)]
                if mode == "restart":
                    asyncio.run_coroutine_threadsafe(s.stop(), loop).result()
                elif s.server is None:
                    asyncio.run_coroutine_threadsafe(s.start(), loop).result()
                s.mode = mode
            next_mode += mode_every
        if not disk_full and disk_at <= now < disk_at + disk_for:
            disk_full = True
            faults.append([now, None, "disk full"])
            with open(filler, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass
        if disk_full and now >= disk_at + disk_for and os.path.exists(filler):
            os.remove(filler)
            faults[-1][1] = now
        if not frozen and now >= freeze_at:
            frozen = True
            agent.send_signal(signal.SIGSTOP)
            faults.append([now, now + args.freeze_s, "frozen"])
            time.sleep(args.freeze_s)
            agent.send_signal(signal.SIGCONT)
        time.sleep(0.2)
    # The last config written must be the valid one before stats and stop.
    open(cfg, "w").write(config(args.probes, ports, out, args.interval_ms))
    end_stats = proc_stats(agent.pid)
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=10)
    elapsed = time.monotonic() - t0

    records = []
    for line in open(out, errors="replace"):
        try:
            records.append(json.loads(line))
        except ValueError:
            records.append({"partial": line})
    stderr = open(stderr_path).read()
    subprocess.run(["umount", disk], check=False)

    def mono(ts):
        from datetime import datetime
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() - wall0

    per_probe = {}
    for r in records:
        if "ts" in r:
            per_probe.setdefault(r.get("probe") or r.get("name"), []).append(mono(r["ts"]))
    in_fault = lambda a, b: any(s - interval <= b and a <= (e if e else elapsed) + interval for s, e, _ in faults)
    worst = 0
    for times in per_probe.values():
        times.sort()
        for a, b in zip(times, times[1:]):
            if not in_fault(a, b):
                worst = max(worst, b - a)
    panics = [r for r in records if str(r.get("meta", {}).get("error", "")).startswith("internal error")]
    dropped_lines = [l for l in stderr.splitlines() if "dropped" in l or "could not be written" in l]
    ticks = args.probes * int(elapsed / interval)
    after_full = [r for r in records if "ts" in r and faults and mono(r["ts"]) > (faults[0][1] or elapsed)]
    print(json.dumps({
        "seconds": round(elapsed), "probes": args.probes, "interval_ms": args.interval_ms,
        "ticks_about": ticks, "records": len(records),
        "partial_lines": sum(1 for r in records if "partial" in r),
        "writer_said": dropped_lines[-1:],
        "records_after_the_disk_was_freed": len(after_full),
        "sighups": hups, "faults": [[round(s), round(e or elapsed), w] for s, e, w in faults],
        "start": start_stats, "end": end_stats,
        "largest_gap_outside_faults_s": round(worst, 2),
        "panic_records": len(panics),
        "exit_code": agent.returncode,
    }, indent=1))


if __name__ == "__main__":
    sys.exit(main())
