"""Streaming control commands: answered a chunk per loop turn, between packet batches.

`flows` walks the table a bounded span of slots per turn and describes what it found a
chunk per turn, so a big table never stalls the datapath for the time a whole walk takes.
`trace` is a subscription to the switch: records are turned into events here, outside the
packet loop: header fields before and after (decoded from the bytes in Python), which of them
changed, the state transition, and the raw bytes (cut to the subscriber's snaplen) for a pcap
file. With TUN offloads a packet's TCP
checksum may be partial (the pseudo-header sum, finished by the device later): the event then
shows, and the pcap holds, the finished checksum (C finishes it in its copies), and says so
under "offload".
"""

from __future__ import annotations

import base64
import heapq
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pktswitch.core import packet
from pktswitch.core.flows import Flow
from pktswitch.core.switch import Switch
from pktswitch.core.trace import HEADERS_SNAP, Record, Subscription

FIELDS = ("src", "sport", "dst", "dport", "flags", "ip_csum", "tcp_csum", "udp_csum")
SCAN_SPAN = 64  # table slots `flows` looks at a time (about 0.1 ms at most in Python)


def parse_client(text: str) -> tuple[bytes, int]:
    """'198.51.100.2:40312' as (4 address bytes, port); ValueError naming what is wrong."""
    ip, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"flow must be CLIENT_IP:PORT like 198.51.100.2:40312, got {text!r}")
    return packet.ip_bytes(ip), int(port)


VNET_NEEDS_CSUM = 1


def event(rec: Record, seq: int, snaplen: int, wall: float) -> dict[str, Any]:
    raw_before, raw_after = rec.before, rec.after
    offload = None
    if rec.vnet:
        flags, gso_type, _, gso_size = struct.unpack_from("<BBHH", rec.vnet)
        partial = bool(flags & VNET_NEEDS_CSUM)
        # (C finished a partial checksum in the copies: they show what the wire carries)
        offload = {"partial_checksum": partial, "gso_type": gso_type, "gso_size": gso_size}
    before = packet.describe(raw_before, rec.length)
    after = packet.describe(raw_after, rec.out_length) if raw_after is not None else None
    changed = [f for f in FIELDS if after is not None and before.get(f) != after.get(f)]
    flow = rec.flow
    ev: dict[str, Any] = {
        "seq": seq,
        "time": round(wall, 6),
        "verdict": rec.verdict,
        "flow": None,
        "service": None,
        "backend": None,
        "transition": list(rec.transition) if rec.transition else None,
        "before": before,
        "after": after,
        "changed": changed,
        "offload": offload,
        "raw_before": base64.b64encode(raw_before[:snaplen]).decode(),
        "raw_after": base64.b64encode(raw_after[:snaplen]).decode() if raw_after else None,
    }
    if flow is not None:
        ev["flow"], ev["service"], ev["backend"] = flow
    return ev


class TraceStream:
    def __init__(self, switch: Switch, args: dict[str, Any], clock: Callable[[], float]) -> None:
        client = parse_client(args["flow"]) if "flow" in args else None
        count = args.get("count")
        if count is not None and count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        snaplen = args.get("snaplen", HEADERS_SNAP)  # (the headers, unless asked for more)
        if not 0 <= snaplen <= 65535:
            raise ValueError(f"snaplen must be 0..65535, got {snaplen}")
        self.switch = switch
        self.clock = clock
        self.sub = Subscription(client=client, count=count, snaplen=snaplen)
        self.sent = 0
        switch.subscribe(self.sub)

    def poll(self, limit: int) -> list[dict[str, Any]]:
        q = self.sub.queue
        offset = time.time() - self.clock()  # the switch's clock is monotonic
        out: list[dict[str, Any]] = []
        while q and len(out) < limit:
            rec = q.popleft()
            self.sent += 1
            out.append(event(rec, self.sent, self.sub.snaplen, rec.t + offset))
        return out

    def pending(self) -> bool:
        return bool(self.sub.queue) or self.done()

    def done(self) -> bool:
        return self.sub.done()

    def summary(self) -> dict[str, int]:
        sub = self.sub
        return {"matched": sub.matched, "sent": self.sent, "dropped": sub.dropped, "lost": sub.lost}

    def close(self) -> None:
        self.switch.unsubscribe(self.sub)


class FlowsStream:
    """The flow table, filtered, walked SCAN_SPAN slots a poll: never the whole table at once,
    so the datapath runs between the slices. Without a limit the flows come in table
    order (the CLI sorts them by age); with one, the `limit` oldest, oldest first, once the
    walk is over (a bounded heap meanwhile). A flow that ends before it is described is
    skipped."""

    def __init__(self, switch: Switch, args: dict[str, Any], clock: Callable[[], float]) -> None:
        limit = args.get("limit")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.switch = switch
        self.clock = clock
        self.service = args.get("service")
        self.backend = args.get("backend")
        self.state = args["state"].upper() if "state" in args else None
        self.limit = limit
        self.next_slot = 0  # where the walk goes on
        self.found: deque[Flow] = deque()  # walked, wanted, not described yet
        self.oldest: list[tuple[float, int, Flow]] = []  # with a limit: a max-heap by age
        self.sent = 0

    def _wanted(self, f: Flow) -> bool:
        return (
            f.alive
            and (self.service is None or f.service.name == self.service)
            and (self.backend is None or f.backend.name == self.backend)
            and (self.state is None or f.state.name == self.state)
        )

    def _walk(self) -> None:
        """One span of the table: its wanted flows into found, or into the heap of the
        oldest (into found, oldest first, once the walk is over)."""
        table = self.switch.table
        flows, self.next_slot = table.scan(self.next_slot, SCAN_SPAN)
        for f in flows:
            if not self._wanted(f):
                continue
            if self.limit is None:
                self.found.append(f)
                continue
            item = (-f.created, -f.slot, f)  # (ties: the lower slot; flows never compare)
            if len(self.oldest) < self.limit:
                heapq.heappush(self.oldest, item)
            elif item > self.oldest[0]:
                heapq.heapreplace(self.oldest, item)
        if self.limit is not None and self._walked():
            self.found.extend(f for _, _, f in sorted(self.oldest, reverse=True))
            self.oldest = []

    def _walked(self) -> bool:
        return self.next_slot >= self.switch.table.max_flows

    def poll(self, limit: int) -> list[dict[str, Any]]:
        if not self.found and not self._walked():
            self._walk()
        out: list[dict[str, Any]] = []
        now = self.clock()
        while self.found and len(out) < limit and not self._full():
            f = self.found.popleft()
            if f.alive:
                out.append(self.switch.flow_view(f, now))
                self.sent += 1
        return out

    def _full(self) -> bool:
        return self.limit is not None and self.sent >= self.limit

    def pending(self) -> bool:
        return True  # more flows, or the summary

    def done(self) -> bool:
        return self._full() or (self._walked() and not self.found)

    def summary(self) -> dict[str, int]:
        return {"flows": self.sent, "table": len(self.switch.table)}

    def close(self) -> None:
        self.found.clear()
        self.oldest = []
