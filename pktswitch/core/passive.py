"""Passive health: the signals the switch sees on real traffic (an RST answering a SYN, a
SYN without SYN-ACK), and resetting a backend's flows when the policy says so."""

from __future__ import annotations

from array import array

from pktswitch._native import ffi
from pktswitch.core import packet
from pktswitch.core.base import SwitchBase
from pktswitch.core.flows import Flow
from pktswitch.core.service import ServiceState
from pktswitch.core.tcpstate import State
from pktswitch.sched.pool import BackendState

COMPACT = 4096  # entries taken from the front before the arrays are moved down


class SynWatch:
    """The new flows passive health waits on for a SYN-ACK, in the order they were opened:
    each its due time and its slot and generation in C's table, packed in two arrays (16
    bytes an entry; a tuple and a Flow view took some 200, and a flood fills the watch)."""

    __slots__ = ("_due", "_head", "_key")

    def __init__(self) -> None:
        self._due = array("d")
        self._key = array("Q")  # gen << 32 | slot
        self._head = 0

    def __len__(self) -> int:
        return len(self._due) - self._head

    def append(self, due: float, slot: int, gen: int) -> None:
        self._due.append(due)
        self._key.append(gen << 32 | slot)

    def first_due(self) -> float | None:
        return self._due[self._head] if self._head < len(self._due) else None

    def first(self) -> tuple[int, int]:
        """The first entry's slot and generation (the watch is not empty)."""
        key = self._key[self._head]
        return key & 0xFFFFFFFF, key >> 32

    def popleft(self) -> tuple[int, int]:
        slot_gen = self.first()
        self._head += 1
        if self._head >= COMPACT and self._head * 2 >= len(self._due):
            del self._due[: self._head]
            del self._key[: self._head]
            self._head = 0
        return slot_gen


class Passive(SwitchBase):
    def passive_pending(self, now: float) -> bool:
        """Whether take_passive has something to say now."""
        due = self._syn_watch.first_due()
        return bool(self._passive) or (due is not None and due <= now)

    def half_open(self, slot: int, gen: int) -> bool:
        """Whether C's slot still holds that flow, in SYN_RECV."""
        c = self.table.tab.flows[slot]
        return bool(c.used) and c.gen == gen and c.state == State.SYN_RECV

    def take_passive(self, now: float) -> list[tuple[ServiceState, BackendState, str]]:
        """Passive health signals since the last call: RSTs answering SYNs, and SYNs still
        without a SYN-ACK once their service's syn_timeout has passed."""
        watch, flows = self._syn_watch, self.table.tab.flows
        while (due := watch.first_due()) is not None and due <= now:
            slot, gen = watch.popleft()
            if self.half_open(slot, gen) and flows[slot].synack_at < 0:
                flow = Flow(self.table, slot)
                t = flow.service.health.syn_timeout
                self._passive.append((flow.service, flow.backend, f"no SYN-ACK within {t:g} s"))
        out, self._passive = self._passive, []
        return out

    def reset_backend(self, backend: BackendState, now: float) -> list[bytes]:
        """End every flow on `backend`: an RST to each client that can take one (it has sent
        an ACK, so its next expected sequence number is known), and the flow is freed.
        Returns the packets to write into the TUN device."""
        packets = []
        for flow in [f for f in self.table if f.backend is backend]:
            nf = self.table.native(flow)
            k = nf.key[0]
            if nf.acked[0]:
                # The client accepts an RST whose seq is exactly its next expected byte
                # (RFC 5961): its last ACK if it has acknowledged all it received, else the
                # end of what the backend sent. Both are sent when they differ.
                vip, client = bytes(ffi.buffer(k.daddr, 4)), bytes(ffi.buffer(k.saddr, 4))
                for seq in dict.fromkeys((nf.ack[0], nf.seq_end[1])):
                    rst = packet.tcp_rst(vip, k.dport, client, k.sport, seq)
                    packets.append(bytes(self._hdr) + rst)
            self.flows_reset += 1
            self._expire(flow, now, counted=False)
        return packets
