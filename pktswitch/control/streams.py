"""Streaming control commands: answered a chunk per loop turn, between packet batches.

`flows` walks a snapshot of the table (sorted by age once, when the request comes) and
describes it a chunk per turn, so describing a big table does not stall the datapath for
the whole time it takes. `trace` is a subscription to the switch:
records are turned into events here, outside the packet loop: header fields before and after
(decoded from the bytes in Python), which of them changed, the state transition, and the raw
bytes (cut to the subscriber's snaplen) for a pcap file. With TUN offloads a packet's TCP
checksum may be partial (the pseudo-header sum, finished by the device later): the event then
shows, and the pcap holds, the finished checksum (C finishes it in its copies), and says so
under "offload".
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Callable
from typing import Any

from pktswitch.core import packet
from pktswitch.core.switch import Switch
from pktswitch.core.trace import HEADERS_SNAP, Record, Subscription

FIELDS = ("src", "sport", "dst", "dport", "flags", "ip_csum", "tcp_csum")


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
    after = packet.describe(raw_after, rec.length) if raw_after is not None else None
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
    """The flow table, oldest flow first, filtered; flows that expire meanwhile are skipped."""

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
        self.flows = sorted(switch.table, key=lambda f: f.created)
        self.pos = 0
        self.sent = 0

    def _wanted(self, f: Any) -> bool:
        return (
            f.alive
            and (self.service is None or f.service.name == self.service)
            and (self.backend is None or f.backend.name == self.backend)
            and (self.state is None or f.state.name == self.state)
        )

    def poll(self, limit: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        now = self.clock()
        while self.pos < len(self.flows) and len(out) < limit and not self._full():
            f = self.flows[self.pos]
            self.pos += 1
            if self._wanted(f):
                out.append(self.switch.flow_view(f, now))
                self.sent += 1
        return out

    def _full(self) -> bool:
        return self.limit is not None and self.sent >= self.limit

    def pending(self) -> bool:
        return True  # more flows, or the summary

    def done(self) -> bool:
        return self._full() or self.pos >= len(self.flows)

    def summary(self) -> dict[str, int]:
        return {"flows": self.sent, "table": len(self.switch.table)}

    def close(self) -> None:
        self.flows = []
