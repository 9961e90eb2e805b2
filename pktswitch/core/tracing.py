"""Tracing: while a client subscribes, every packet is recorded before and after its
rewrite, with its verdict and state move."""

from __future__ import annotations

from pktswitch._native import ffi
from pktswitch.core import packet
from pktswitch.core.base import SwitchBase
from pktswitch.core.trace import Record, Subscription


class Tracing(SwitchBase):
    # ------------------------------------------------------------------ tracing
    def subscribe(self, sub: Subscription) -> None:
        """Start recording packets for `sub`; the traced path replaces process(). Every
        packet takes the path it takes untraced (C opens flows and forwards established ones
        as before): only C tells every state change it makes while anyone traces."""
        self.subscriptions.append(sub)
        self.process = self._process_traced  # type: ignore[method-assign]
        self.table.tab.all_events = 1

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self.subscriptions:
            self.subscriptions.remove(sub)
        if not self.subscriptions:
            del self.process  # back to the class's untraced method
            self.table.tab.all_events = 0

    def _process_traced(self, length: int, now: float) -> bool:
        hdr = self._hdr  # the trace shows IP packets, without the virtio_net_hdr
        before = bytes(self.buf[hdr:length])
        fast = self.fast
        self.last_transition = None
        forward = type(self).process(self, length, now)  # the untraced method
        meta = self.meta
        tab = self.table.tab
        flow: tuple[str, str, str] | None = None
        if meta.slot >= 0 and tab.flows[meta.slot].used:
            f, k = self.table.flow(meta.slot), tab.flows[meta.slot].key[0]
            client: tuple[bytes, int] | None = f.client
            flow = (f"{packet.ip_str(k.saddr)}:{k.sport}", f.service.name, f.backend.name)
        elif meta.err == 0 or meta.err >= packet.PARSED:  # it parsed: its client is known
            client = (bytes(ffi.buffer(meta.key.saddr, 4)), meta.key.sport)
        else:
            client = None
        tr = self.last_transition
        rec = Record(
            t=now,
            before=before,
            after=bytes(self.buf[hdr:length]) if forward else None,
            verdict=("fast" if self.fast > fast else "slow")
            if forward
            else f"drop:{self.last_drop}",
            flow=flow,
            transition=(tr[0].name, tr[1].name) if tr else None,
            vnet=bytes(self.buf[:hdr]),
        )
        for sub in self.subscriptions:
            if sub.wants(client):
                sub.offer(rec)
        return forward
