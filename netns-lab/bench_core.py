"""Core microbenchmark, no TUN device and no root: the switch alone, as the datapath calls it.

    make bench-core
    .venv/bin/python netns-lab/bench_core.py --flows 1000000

  new flows/s        SYNs of distinct clients, each scheduled, SNAT-allocated and inserted
  short connections  SYN, SYN-ACK, ACK, FIN, FIN, ACK per connection (--connections, serially)
                     and their expiry: the switch's whole work for a Connection: close request
  established pps    ACKs of established flows in both directions (the C fast path), once
                     through Switch.process (one Python call per packet) and once through
                     pks_process_many, the drain loop's per-packet work (copy into the
                     buffer, clock read, pks_process) in C without its read() and write()
  bytes per flow     RSS growth of a fresh process that builds the switch and opens --flows
                     flows (each SYN made as it is sent), divided by flows
  by scheduler       new flows/s of every scheduler (--by-scheduler SYNs each, 0 skips), the
                     schedulers in turn, --rounds times, the median and the spread

Each packet is copied into the switch's buffer first, as os.readv does in the datapath. The
service is scheduled by rr unless --scheduler names wrr (weights 1/1/1), lc or wlc.
Targets of the project: >= 1 M packets/s established, >= 200 k new flows/s, <= 256 B/flow.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import statistics
import struct
import sys
import time
from pathlib import Path

from pktswitch._native import ffi, lib

from pktswitch.core.switch import ServiceState, Switch
from pktswitch.sched.pool import BackendState

try:
    from pktswitch.sched.registry import SCHEDULERS, make
except ImportError:  # a tree from before sched/ had a module per family (to compare commits)
    from pktswitch.sched.base import SCHEDULERS, make  # type: ignore[attr-defined,no-redef]

VIP = bytes([203, 0, 113, 10])


def rss_bytes() -> int:
    m = re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(m.group(1)) * 1024 if m else 0


def csum(b: bytes) -> int:
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_packet(src: bytes, sport: int, dst: bytes, dport: int, flags: int) -> bytes:
    """A 40-byte TCP/IPv4 packet with correct checksums (the switch checks the IP one)."""
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, src, dst))
    ip[10:12] = struct.pack("!H", csum(bytes(ip)))
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 0x50, flags, 65535, 0, 0))
    pseudo = src + dst + struct.pack("!BBH", 0, 6, 20)
    tcp[16:18] = struct.pack("!H", csum(pseudo + bytes(tcp)))
    return bytes(ip + tcp)


def client(i: int) -> tuple[bytes, int]:
    """A distinct (address, port) per i, within 198.51.100.2-.251 (250 x 64000 clients)."""
    return bytes([198, 51, 100, 2 + i % 250]), 1024 + i // 250


BACKENDS = [bytes([192, 0, 2, i]) for i in (1, 2, 3)]
SNAT1 = bytes([203, 0, 113, 1])


def service(scheduler: str) -> ServiceState:
    backends = [BackendState(n, f"192.0.2.{i}", 80) for i, n in enumerate("ABC", 1)]
    return ServiceState("web", "203.0.113.10", 80, make(scheduler), backends)


def switch(max_flows: int, scheduler: str) -> Switch:
    svc = service(scheduler)
    snat = [f"203.0.113.{i}" for i in range(1, 10)]
    # every flow stays half-open here (no handshake completes): the table's whole size for them
    return Switch([svc], snat=snat, max_flows=max_flows, max_half_open=max_flows)


def run(sw: Switch, packets: list[bytes], now: float) -> tuple[float, int]:
    buf, process = sw.buf, sw.process
    forwarded = 0
    t0 = time.perf_counter()
    for p in packets:
        buf[:40] = p
        forwarded += process(40, now)
    return time.perf_counter() - t0, forwarded


def memory_per_flow(flows: int, scheduler: str) -> float:
    """RSS growth of a process that builds a switch and opens `flows` flows in it, per flow."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, report, exit without the parent's clean-up
        try:
            os.close(r)
            gc.collect()
            base = rss_bytes()
            sw = switch(flows, scheduler)
            buf, process = sw.buf, sw.process
            for i in range(flows):
                buf[:40] = tcp_packet(*client(i), VIP, 80, 0x02)
                if not process(40, 1.0):
                    raise SystemExit(f"SYN {i} dropped: {sw.dropped}")
            gc.collect()
            os.write(w, repr((rss_bytes() - base) / flows).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        answer = f.read()
    os.waitpid(pid, 0)
    if not answer:
        raise SystemExit("the memory measurement failed (see above)")
    return float(answer)


def by_scheduler(n: int, rounds: int) -> None:
    """New flows/s of every scheduler: n SYNs of distinct clients each, the schedulers in
    turn within a round (neighbours in time on a noisy host), the median over the rounds."""
    syns = [tcp_packet(*client(i), VIP, 80, 0x02) for i in range(n)]
    rates: dict[str, list[float]] = {name: [] for name in SCHEDULERS}
    in_c: dict[str, int] = {}
    for _ in range(rounds):
        for name in SCHEDULERS:
            sw = switch(n, name)
            took, ok = run(sw, syns, 1.0)
            assert ok == n, f"{name}: {n - ok} SYNs dropped: {sw.dropped}"
            in_c[name] = int(sw.stats(1.0).get("flows_opened_in_c", 0))  # (an older tree's too)
            rates[name].append(n / took)
            del sw
    rr = statistics.median(rates["rr"])
    print(f"\nnew flows by scheduler ({n:,} SYNs each, median of {rounds} rounds, min..max):")
    for name, r in rates.items():
        m = statistics.median(r)
        print(
            f"  {name:7s} {m:12,.0f} /s  ({min(r):,.0f}..{max(r):,.0f})  {m / rr:5.2f} x rr"
            f"  opened in C: {in_c[name] / n:4.0%}"
        )


def established(n: int, took: float, how: str) -> None:
    print(f"established:      {n / took:12,.0f} packets/s ({n:,} in {took:.2f} s, {how})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=200_000, help="flows created and measured")
    ap.add_argument("--connections", type=int, default=100_000, help="short connections")
    ap.add_argument("--established", type=int, default=1000, help="flows for the pps run")
    ap.add_argument("--packets", type=int, default=2_000_000, help="packets in the pps run")
    ap.add_argument("--by-scheduler", type=int, default=100_000, help="SYNs per scheduler")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the by-scheduler run")
    ap.add_argument(
        "--scheduler",
        default="rr",
        choices=["rr", "wrr", "lc", "wlc"],
        help="the service's scheduler (each sends the short connections to A, B, C in turn)",
    )
    args = ap.parse_args()

    # memory per flow first, in a child process that makes each SYN as it sends it: a list of
    # prepared packets freed before the last reading would hide its own size from RSS
    per_flow = memory_per_flow(args.flows, args.scheduler)
    # new flows per second
    sw = switch(args.flows, args.scheduler)
    syns = [tcp_packet(*client(i), VIP, 80, 0x02) for i in range(args.flows)]
    took, ok = run(sw, syns, 1.0)
    assert ok == args.flows, f"{args.flows - ok} SYNs dropped: {sw.dropped}"
    del syns, sw
    print(
        f"new flows:        {args.flows / took:12,.0f} /s   ({args.flows:,} SYNs in {took:.2f} s)"
    )
    print(
        f"memory per flow:  {per_flow:12,.0f} B    ({args.flows:,} flows, RSS growth incl. table)"
    )

    # short connections per second: handshake, both FINs, the last ACK, and expiry at the end
    n = args.connections
    sw = Switch([service(args.scheduler)], snat=["203.0.113.1"], max_flows=n, snat_start=0)
    pkts = []
    for i in range(n):
        src, sport = client(i)
        b = BACKENDS[i % len(BACKENDS)]  # rr; SNAT ports handed out in order per backend
        nport = 1024 + i // len(BACKENDS)
        for side, flags in ((0, 0x02), (1, 0x12), (0, 0x10), (0, 0x11), (1, 0x11), (0, 0x10)):
            if side == 0:
                pkts.append(tcp_packet(src, sport, VIP, 80, flags))
            else:
                pkts.append(tcp_packet(b, 80, SNAT1, nport, flags))
    took, ok = run(sw, pkts, 1.0)
    assert ok == len(pkts), f"{len(pkts) - ok} packets dropped: {sw.dropped}"
    t0 = time.perf_counter()
    expired = sw.expire(1e6)
    took += time.perf_counter() - t0
    assert expired == n and len(sw.table) == 0, (expired, len(sw.table))
    print(f"short connections: {n / took:11,.0f} /s   ({n:,} x 6 packets + expiry in {took:.2f} s)")
    del pkts, sw

    # established packets per second, both directions
    sw = switch(args.established * 2, args.scheduler)
    pkts = []
    for i in range(args.established):
        src, sport = client(i)
        buf = tcp_packet(src, sport, VIP, 80, 0x02)
        sw.buf[:40] = buf
        assert sw.process(40, 1.0)
        out = bytes(sw.buf[:40])
        snat, backend, nport = out[12:16], out[16:20], struct.unpack_from("!H", out, 20)[0]
        back = tcp_packet(backend, 80, snat, nport, 0x12)
        sw.buf[:40] = back
        assert sw.process(40, 1.0)
        sw.buf[:40] = tcp_packet(src, sport, VIP, 80, 0x10)  # the handshake's last ACK
        sw.process(40, 1.0)
        pkts.append(tcp_packet(src, sport, VIP, 80, 0x10))
        pkts.append(tcp_packet(backend, 80, snat, nport, 0x10))
    stream = (pkts * (args.packets // len(pkts) + 1))[: args.packets]
    fast0 = sw.fast
    took, ok = run(sw, stream, 2.0)
    assert ok == len(stream) and sw.fast - fast0 == len(stream), "not all on the fast path"
    established(len(stream), took, "one Python call each")
    # the same packets through the drain loop's per-packet work, minus its read() and write()
    block = ffi.from_buffer(b"".join(stream))
    t0 = time.perf_counter()
    bufp = getattr(sw, "bufp", None) or sw._bufp  # type: ignore[attr-defined]  # (older trees)
    done = lib.pks_process_many(
        sw.table.tab, block, 40, len(stream), bufp, len(sw.buf), sw.vnet, sw.meta
    )
    took = time.perf_counter() - t0
    assert done == len(stream), f"packet {done} left the fast path"
    established(len(stream), took, "C loop as pks_drain")
    if args.by_scheduler:
        by_scheduler(args.by_scheduler, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
