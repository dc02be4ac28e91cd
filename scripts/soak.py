#!/usr/bin/env python3
"""Fault soak: the real agent, 100+ probes, while the world misbehaves.

Runs `wsprobe run` in a network namespace of its own, against local
WebSocket echo servers and a local DNS server (raw asyncio in this file, no
third-party code), while on a schedule:

  - each echo server cycles through answering normally, answering slowly,
    accepting and hanging, resetting mid-frame and restarting;
  - the DNS server stops answering for a while (half the probes use names);
  - the Prometheus textfile's small tmpfs is filled, then freed;
  - the collector stops reading the agent's stdout (the records) for a while;
  - SIGHUP arrives every few seconds, alternating an invalid and a valid
    config (the agent must keep running the valid one);
  - the agent is frozen with SIGSTOP, then SIGCONT (a frozen router).

It accounts for every tick from the agent's own account at the stop
(`wsprobe: ticks: R run, S skipped; records: W written, D dropped, C cut
short ...`) and what it read: W must equal the records read, R must equal
W + D + C, and R + S must match the ticks the wall clock gave each probe.
It reports fds, threads and RSS after the first minute and at the end, the
largest gap between a probe's records outside the faults that cause gaps
(the freeze, the stalled stdout), the textfile's freshness, and panic
records. It prints a JSON report and exits 1 if a target is missed.
Figures, not a test: docs/reliability.md has the last ones.

usage (root: the namespace, its resolv.conf, the tmpfs):
  /opt/wsprobe-test/bin/python scripts/soak.py [--minutes 60] [--probes 100]
      [--binary target/release/wsprobe] [--interval-ms 2000]
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MODES = ["ok", "slow", "ok", "hang", "ok", "reset", "ok", "restart"]
DOMAIN = b"soak.test"


class Server:
    """One WebSocket echo server whose behaviour changes on a schedule."""

    def __init__(self, port, slow_s):
        self.port, self.slow_s = port, slow_s
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
                # Until the client gives up and closes: holding each
                # connection longer would only run this process out of fds.
                await reader.read()
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


class Dns(asyncio.DatagramProtocol):
    """A resolver for *.soak.test: A is 127.0.0.1, AAAA has no records
    (NODATA), other names do not exist. `silent` drops every query."""

    def __init__(self):
        self.silent = False
        self.answered = self.ignored = 0

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if self.silent:
            self.ignored += 1
            return
        try:
            reply = self.answer(data)
        except (IndexError, struct.error):
            return
        self.answered += 1
        self.transport.sendto(reply, addr)

    @staticmethod
    def answer(query):
        qid, flags = struct.unpack(">HH", query[:4])
        i, labels = 12, []
        while query[i]:
            labels.append(query[i + 1:i + 1 + query[i]].lower())
            i += 1 + query[i]
        qtype, _qclass = struct.unpack(">HH", query[i + 1:i + 5])
        question = query[12:i + 5]
        name = b".".join(labels)
        ours = name == DOMAIN or name.endswith(b"." + DOMAIN)
        rcode = 0 if ours else 3
        answers = b""
        if ours and qtype == 1:
            answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 0, 4) + socket.inet_aton("127.0.0.1")
        flags = 0x8000 | (flags & 0x0100) | 0x0080 | 0x0400 | rcode
        header = struct.pack(">HHHHHH", qid, flags, 1, 1 if answers else 0, 0, 0)
        return header + question + answers


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


def calm_stats(pid, servers, on_loop, interval):
    """`proc_stats` once every server has answered normally for two
    intervals: then no run is left holding a socket or a lookup, and the
    start and end figures compare like with like."""
    for s in servers:
        if s.server is None:
            on_loop(s.start())
        s.mode = "ok"
    time.sleep(2 * interval + 0.5)
    return proc_stats(pid)


def config(probes, ports, textfile, interval_ms, valid=True):
    if not valid:
        return '{"probes": [ this is not JSON'
    return json.dumps({
        "output": {"ndjson": "-", "prometheus_textfile": textfile},
        "probes": [
            {
                "name": f"p{i:03}",
                # Half by name, through the DNS server; half by address.
                "url": (f"ws://s{i}.soak.test:{ports[i % len(ports)]}/soak" if i % 2 == 0
                        else f"ws://127.0.0.1:{ports[i % len(ports)]}/soak"),
                "interpretation": "round_trip_latency",
                "send_message": "ping",
                "expect_message": "ping",
                "timeout_ms": interval_ms // 2,
                "interval_ms": interval_ms,
            }
            for i in range(probes)
        ],
    })


class Reader:
    """Reads the agent's stdout (the records) unless told to stall."""

    def __init__(self, stream):
        self.stream = stream
        self.reading = threading.Event()
        self.reading.set()
        self.records, self.partial = [], []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        for raw in self.stream:
            self.reading.wait()
            line = raw.decode("utf-8", "replace")
            try:
                if not line.endswith("\n"):
                    raise ValueError("no newline")
                self.records.append(json.loads(line))
            except ValueError:
                self.partial.append(line)


def in_namespace(args):
    """Everything runs here, inside the namespace the outer process made."""
    duration = args.minutes * 60
    interval = args.interval_ms / 1000
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    work = tempfile.mkdtemp(prefix="wsprobe-soak-")
    disk = os.path.join(work, "prom")
    os.mkdir(disk)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", disk], check=True)
    textfile = os.path.join(disk, "wsprobe.prom")
    ports = []
    for _ in range(args.servers):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
        s.close()
    cfg = os.path.join(work, "config.json")
    open(cfg, "w").write(config(args.probes, ports, textfile, args.interval_ms))

    loop = asyncio.new_event_loop()
    servers = [Server(p, slow_s=interval * 0.4) for p in ports]
    for s in servers:
        loop.run_until_complete(s.start())
    _, dns = loop.run_until_complete(loop.create_datagram_endpoint(Dns, local_addr=("127.0.0.1", 53)))
    threading.Thread(target=loop.run_forever, daemon=True).start()
    on_loop = lambda coro: asyncio.run_coroutine_threadsafe(coro, loop).result()

    stderr_path = os.path.join(work, "stderr.log")
    agent = subprocess.Popen([args.binary, "run", "-c", cfg], stdout=subprocess.PIPE,
                             stderr=open(stderr_path, "w"))
    reader = Reader(agent.stdout)
    # Await the agent's start line: a SIGHUP before it has its handlers
    # would end it.
    started_by = time.monotonic() + 10
    while "wsprobe: started " not in open(stderr_path).read():
        if agent.poll() is not None or time.monotonic() > started_by:
            print(open(stderr_path).read(), file=sys.stderr)
            raise SystemExit("soak: the agent did not start")
        time.sleep(0.05)
    t0 = time.monotonic()
    wall0 = time.time()

    # The faults that take a window, as fractions of the run; none overlap.
    short = min(60, duration * 0.1)
    windows = {
        "disk full": (duration * 0.20, short),
        "resolver silent": (duration * 0.35, short),
        "frozen": (duration * 0.50, args.freeze_s),
        "stdout not read": (duration * 0.65, short),
    }
    faults = {}  # name -> [start, end] on the monotonic clock, from t0
    first_minute = min(60, duration / 6)
    start_stats = None
    filler = os.path.join(disk, "filler")
    next_hup = next_mode = next_sample = 0.0
    hups = mode_step = 0
    threads_most = rss_most = 0
    prom_ages = {"stdout not read": 0.0, "otherwise": 0.0}
    stall_samples = 0
    while (now := time.monotonic() - t0) < duration:
        if start_stats is None and now >= first_minute:
            start_stats = calm_stats(agent.pid, servers, on_loop, interval)
            continue
        if now >= next_hup:
            hups += 1
            # Odd SIGHUPs bring an invalid config: the agent keeps the old.
            valid = hups % 2 == 0
            open(cfg, "w").write(config(args.probes, ports, textfile, args.interval_ms, valid))
            agent.send_signal(signal.SIGHUP)
            next_hup += args.hup_every_s
        if now >= next_mode:
            mode_step += 1
            for i, s in enumerate(servers):
                mode = MODES[(mode_step + i) % len(MODES)]
                if mode == "restart":
                    on_loop(s.stop())
                elif s.server is None:
                    on_loop(s.start())
                s.mode = mode
            next_mode += max(10, duration / 40)
        for name, (start, length) in windows.items():
            on = start <= now < start + length
            if on and name not in faults:
                faults[name] = [now, None]
                if name == "disk full":
                    with open(filler, "wb") as f:
                        try:
                            while True:
                                f.write(b"\0" * 65536)
                        except OSError:
                            pass
                elif name == "resolver silent":
                    dns.silent = True
                elif name == "frozen":
                    agent.send_signal(signal.SIGSTOP)
                    time.sleep(length)
                    agent.send_signal(signal.SIGCONT)
                    faults[name][1] = time.monotonic() - t0
                elif name == "stdout not read":
                    reader.reading.clear()
            elif not on and name in faults and faults[name][1] is None:
                faults[name][1] = now
                if name == "disk full":
                    os.remove(filler)
                elif name == "resolver silent":
                    dns.silent = False
                elif name == "stdout not read":
                    reader.reading.set()
        if now >= next_sample:
            status = open(f"/proc/{agent.pid}/status").read()
            field = lambda n: int(next(l.split()[1] for l in status.splitlines() if l.startswith(n)))
            threads_most = max(threads_most, field("Threads:"))
            if now >= first_minute:
                rss_most = max(rss_most, field("VmRSS:"))
            # How stale the textfile gets, outside the full disk (when it
            # cannot be rewritten) and the freeze (when nothing runs).
            # (and for 3 s after each, the next rewrite's time).
            stale_ok = any(f[1] is None or now < f[1] + 3
                           for n, f in faults.items() if n in ("disk full", "frozen"))
            if not stale_ok:
                try:
                    age = time.time() - os.stat(textfile).st_mtime
                    key = "stdout not read" if not reader.reading.is_set() else "otherwise"
                    if now > 10:
                        prom_ages[key] = max(prom_ages[key], age)
                        stall_samples += key == "stdout not read"
                except FileNotFoundError:
                    pass
            next_sample += 1
        time.sleep(0.2)

    # The last config written is a valid one, then the stats and the stop.
    open(cfg, "w").write(config(args.probes, ports, textfile, args.interval_ms))
    end_stats = calm_stats(agent.pid, servers, on_loop, interval)
    stop_at = time.time()
    agent.send_signal(signal.SIGTERM)
    try:
        agent.wait(timeout=10)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()
    reader.thread.join(timeout=10)
    elapsed = time.monotonic() - t0
    stderr = open(stderr_path).read()
    subprocess.run(["umount", disk], check=False)

    mono = lambda ts: datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() - wall0
    records = reader.records
    per_probe = {}
    for r in records:
        per_probe.setdefault(r["probe"], []).append(mono(r["ts"]))

    # The agent's account against what was read.
    account_line = next((l for l in stderr.splitlines() if l.startswith("wsprobe: ticks: ")), "")
    counted = lambda word: int(m.group(1)) if (m := re.search(r"(-?\d+) " + word, account_line)) else None
    runs, skipped, written = counted("run"), counted("skipped"), counted("written")
    dropped, cut_short = counted("dropped"), counted("cut short")
    # Printed only when not zero.
    discarded, unaccounted = counted("discarded") or 0, counted("unaccounted") or 0
    # Ticks by the wall clock: each probe's first record is its first tick
    # (started within the grace); a tick is due every interval to the stop.
    stop_mono = stop_at - wall0
    ticks_by_clock = sum(int((stop_mono - min(t)) // interval) + 1 for t in per_probe.values())

    gap_faults = [faults[n] for n in ("frozen", "stdout not read") if n in faults]
    in_gap_fault = lambda a, b: any(s - interval <= b and a <= e + interval for s, e in gap_faults)
    worst = 0.0
    for times in per_probe.values():
        times.sort()
        for a, b in zip(times, times[1:]):
            if not in_gap_fault(a, b):
                worst = max(worst, b - a)

    resolver = faults.get("resolver silent")
    named = lambda r: int(r["probe"][1:]) % 2 == 0
    during_dns = [r for r in records if resolver and named(r) and resolver[0] + args.interval_ms / 500
                  <= mono(r["ts"]) <= resolver[1] - interval]
    # A timeout in phase dns, or (when a lookup the resolver never answered
    # gives up) a failure in phase dns.
    dns_failures = [r for r in during_dns if r.get("meta", {}).get("phase") == "dns"]
    named_back = {r["probe"] for r in records if resolver and named(r) and mono(r["ts"]) > resolver[1] + 12
                  and r.get("reason") is None}
    named_all = {p for p in per_probe if int(p[1:]) % 2 == 0}
    panics = [r for r in records if str(r.get("meta", {}).get("error", "")).startswith("internal error")]

    rss_growth = (end_stats["rss_kb"][1] - start_stats["rss_kb"][1]) / start_stats["rss_kb"][1] * 100
    verdicts = {
        "every fault window ran": sorted(faults) == sorted(windows) and all(e for _, e in faults.values()),
        "records read = written": written == len(records),
        "runs = written + dropped + cut short, none unaccounted":
            unaccounted == 0 and runs == (written or 0) + (dropped or 0) + (cut_short or 0) + discarded,
        "runs + skipped = ticks by the clock, within one a probe":
            runs is not None and abs(runs + skipped - ticks_by_clock) <= args.probes,
        "no partial line": not reader.partial,
        # The least over two seconds: the agent's own; the most also counts
        # the sockets of runs in flight at the sample, which vary.
        "fds equal at start and end": start_stats["fds"][0] == end_stats["fds"][0],
        "threads equal at start and end": start_stats["threads"][0] == end_stats["threads"][0],
        "RSS within 5 % after the first minute": abs(rss_growth) <= 5,
        "no probe silent for two intervals outside the freeze and the stall": worst <= 2 * interval + 0.1,
        "textfile fresh while stdout is not read": stall_samples > 0 and prom_ages["stdout not read"] < 3,
        "named probes fail in phase dns while the resolver is silent": len(dns_failures) == len(during_dns) > 0,
        "every named probe succeeds once it answers again": bool(named_all) and named_back == named_all,
        "no panic record": not panics,
        "exit code 0": agent.returncode == 0,
    }
    report = {
        "seconds": round(elapsed), "probes": args.probes, "interval_ms": args.interval_ms,
        "binary": args.binary,
        "account": account_line.removeprefix("wsprobe: "),
        "records_read": len(records), "ticks_by_the_clock": ticks_by_clock,
        "partial_lines": len(reader.partial),
        "faults": {n: [round(s), round(e)] for n, (s, e) in faults.items()},
        "sighups": hups,
        "dns": {"answered": dns.answered, "ignored": dns.ignored,
                "named_records_while_silent": len(during_dns), "of_them_failed_in_phase_dns": len(dns_failures),
                "named_probes_back_after": f"{len(named_back)} of {len(named_all)}"},
        "textfile_oldest_s": {k: round(v, 1) for k, v in prom_ages.items()},
        "textfile_samples_while_stdout_not_read": stall_samples,
        "after_first_minute": start_stats, "end": end_stats,
        "threads_most": threads_most, "rss_most_kb_after_first_minute": rss_most,
        "rss_growth_pct": round(rss_growth, 1),
        "largest_gap_outside_freeze_and_stall_s": round(worst, 2),
        "panic_records": len(panics),
        "exit_code": agent.returncode,
        "agent_log_tail": stderr.splitlines()[-4:],
        "verdicts": verdicts,
    }
    print(json.dumps(report, indent=1))
    return 0 if all(verdicts.values()) else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--probes", type=int, default=100)
    ap.add_argument("--servers", type=int, default=4)
    ap.add_argument("--interval-ms", type=int, default=2000)
    ap.add_argument("--binary", default="target/release/wsprobe")
    ap.add_argument("--freeze-s", type=float, default=30)
    ap.add_argument("--hup-every-s", type=float, default=5)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.binary = os.path.abspath(args.binary)
    if args.inside:
        return in_namespace(args)
    if os.geteuid() != 0:
        print("soak: needs root (a network namespace, its resolv.conf, a tmpfs)", file=sys.stderr)
        return 2
    # `ip netns exec` bind-mounts /etc/netns/NAME/resolv.conf over
    # /etc/resolv.conf: the agent's resolver asks the DNS server above.
    ns = f"wsprobe-soak-{os.getpid()}"
    etc = f"/etc/netns/{ns}"
    os.makedirs(etc)
    try:
        open(f"{etc}/resolv.conf", "w").write("nameserver 127.0.0.1\n")
        subprocess.run(["ip", "netns", "add", ns], check=True)
        inner = [sys.executable, os.path.abspath(__file__), "--inside"] + sys.argv[1:]
        inner += ["--binary", args.binary]
        return subprocess.run(["ip", "netns", "exec", ns] + inner).returncode
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
        for f in os.listdir(etc):
            os.remove(os.path.join(etc, f))
        os.rmdir(etc)


if __name__ == "__main__":
    sys.exit(main())
