"""Packet tracing: what the switch did to each packet, before and after, for whoever watches.

A subscriber (one `pktswitch trace`) gets a bounded queue. While at least one is subscribed C
copies each packet as it decides on it (core/tracing.py): before, after, verdict, state move;
a record that finds its subscriber's queue full is dropped and counted, never waited for, so
tracing costs the datapath a bounded amount of work per packet and nothing when nobody
traces. Records are turned into text or JSON later, outside the packet loop.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

# what a trace keeps of each packet unless it asks for more: every header it shows (IPv4 and
# TCP with their options, 60 bytes each at most); C copies at least this much
HEADERS_SNAP = 128

QUEUE_MAX = 4096  # records waiting for one subscriber before new ones are dropped


@dataclass(slots=True)
class Record:
    t: float  # the switch's clock (`now`) when the packet was handled
    before: bytes  # the IP packet as it came, its first `snap` bytes at most
    after: bytes | None  # as it left, its first `snap` bytes at most; None: dropped
    verdict: str  # "fast" (forwarded) or "drop:<reason>"
    # the packet's flow as it was then, if any: (client "ip:port", service, backend)
    flow: tuple[str, str, str] | None
    transition: tuple[str, str] | None  # (old state, new state) when it changed
    vnet: bytes = b""  # the virtio_net_hdr the packet came with (TUN offloads), if any
    length: int = 0  # the IP packet's whole length
    out_length: int = 0  # and as it left (a packet the switch answered with: its own)
    finished: bool = False  # its TCP checksum was partial (offloads): the copies finish it


@dataclass(slots=True, eq=False)
class Subscription:
    client: tuple[bytes, int] | None = None  # follow one client address and port only
    count: int | None = None  # stop after this many records
    snaplen: int = HEADERS_SNAP
    queue: deque[Record] = field(default_factory=deque)
    matched: int = 0  # records that passed the filter
    dropped: int = 0  # of those, lost to a full queue
    lost: int = 0  # packets C could not record while subscribed (its buffer full), any flow's
    lost_at: int = 0  # C's count of those when the subscription began

    def wants(self, client: tuple[bytes, int] | None) -> bool:
        if self.count is not None and self.matched >= self.count:
            return False
        return self.client is None or self.client == client

    def done(self) -> bool:
        return self.count is not None and self.matched >= self.count and not self.queue

    def offer(self, rec: Record) -> None:
        self.matched += 1
        if len(self.queue) >= QUEUE_MAX:
            self.dropped += 1
        else:
            self.queue.append(rec)
