"""Tracing: while a client subscribes, C records every packet it decides on, before and
after its rewrite, with its verdict and its flow's state move (native/pks_trace.h), into a
buffer this module hands it and empties after each batch. A traced packet takes the path an
untraced one takes: the native drain loop keeps running, and C opens and forwards as ever."""

from __future__ import annotations

import ipaddress
from typing import Any

from pktswitch._native import ffi, lib
from pktswitch.core import packet
from pktswitch.core.base import SwitchBase
from pktswitch.core.cdata import CData
from pktswitch.core.flows import STATES, Registry
from pktswitch.core.trace import HEADERS_SNAP, Record, Subscription

# records the buffer holds: a batch of the loop's (io/loop.py BATCH), each packet read and
# decided once, with room to spare; more are counted as lost by C
TRACE_RECORDS = 128
_REC = ffi.sizeof("pks_trace_rec")


class Tracing(SwitchBase):
    def subscribe(self, sub: Subscription) -> None:
        """Start recording packets for `sub` (as well as for the others)."""
        self.take_trace()  # what was recorded before is the others' only
        self.subscriptions.append(sub)
        sub.lost_at = int(self.table.tab.trace_lost)
        self._trace_buffer()
        self.process = self._process_traced  # type: ignore[method-assign]

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self.subscriptions:
            self.take_trace()
            self.subscriptions.remove(sub)
        self._trace_buffer()
        if not self.subscriptions:
            del self.process  # back to the class's method

    def _trace_buffer(self) -> None:
        """A buffer for C sized to what the subscribers ask for (their largest snaplen);
        none when nobody traces. The old one's records must have been taken."""
        tab = self.table.tab
        if not self.subscriptions:
            lib.pks_trace_set(tab, ffi.NULL, 0, 0)
            self._trace = None
            return
        snap = max(HEADERS_SNAP, *(s.snaplen for s in self.subscriptions))
        size = TRACE_RECORDS * lib.pks_trace_size(snap, snap)
        self._trace = ffi.new("uint64_t[]", size // 8)  # (8-aligned)
        if lib.pks_trace_set(tab, ffi.cast("uint8_t *", self._trace), size, snap) != 0:
            raise RuntimeError(f"the native table refused a {size}-byte trace buffer")

    def _process_traced(self, length: int, now: float) -> bool:
        forward = type(self).process(self, length, now)  # the class's method
        self.take_trace()
        return forward

    def take_trace(self) -> None:
        """Hand what C recorded since the last call to the subscribers that want it."""
        tab = self.table.tab
        used = tab.trace_used
        if used:
            base = ffi.cast("uint8_t *", self._trace)
            raw = ffi.buffer(base, used)
            at = 0
            while at < used:
                r = ffi.cast("pks_trace_rec *", base + at)
                self._offer(r, raw, at + _REC)
                at += int(r.size)
            tab.trace_used = 0
        lost = int(tab.trace_lost)
        for sub in self.subscriptions:
            sub.lost = lost - sub.lost_at

    def _offer(self, r: CData, raw: ffi.buffer, at: int) -> None:
        cap = r.cap
        client = (r.client.to_bytes(4, "big"), int(r.client_port)) if r.has_client else None
        wanting = [s for s in self.subscriptions if s.wants(client)]
        if not wanting:
            return
        flow: tuple[str, str, str] | None = None
        if r.slot >= 0 and client is not None:
            flow = (
                f"{ipaddress.IPv4Address(r.client)}:{r.client_port}",
                _name(self.table.services, r.service),
                _name(self.table.backends, r.backend),
            )
        copies = bytes(raw[at : at + cap + r.out_cap])
        fast = r.verdict == packet.VERDICT_FAST
        was, to = getattr(r, "from"), r.to
        rec = Record(
            t=r.t,
            before=copies[:cap],
            after=copies[cap:] if fast else None,
            verdict="fast" if fast else f"drop:{packet.PARSE_ERRORS[r.err]}",
            flow=flow,
            transition=(STATES[was].name, STATES[to].name) if was != to else None,
            vnet=bytes(r.vnet) if self.vnet else b"",
            length=r.len,
            out_length=r.out_len,
            finished=bool(r.partial),
        )
        for sub in wanting:
            sub.offer(rec)


def _name(numbers: Registry[Any], n: int) -> str:
    """The name of what number n stands for (a service, a backend), "?" if it is gone."""
    obj = numbers[n] if 0 <= n < numbers.capacity else None
    return obj.name if obj is not None else "?"
