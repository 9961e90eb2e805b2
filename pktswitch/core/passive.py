"""Passive health: the signals the switch sees on real traffic (an RST answering a SYN, a
SYN without SYN-ACK), and resetting a backend's flows when the policy says so."""

from __future__ import annotations

from pktswitch._native import ffi
from pktswitch.core import packet
from pktswitch.core.base import SwitchBase
from pktswitch.core.service import ServiceState
from pktswitch.core.tcpstate import State
from pktswitch.sched.pool import BackendState


class Passive(SwitchBase):
    def passive_pending(self, now: float) -> bool:
        """Whether take_passive has something to say now."""
        watch = self._syn_watch
        return bool(self._passive) or bool(watch and watch[0][0] <= now)

    def take_passive(self, now: float) -> list[tuple[ServiceState, BackendState, str]]:
        """Passive health signals since the last call: RSTs answering SYNs, and SYNs still
        without a SYN-ACK once their service's syn_timeout has passed."""
        watch = self._syn_watch
        while watch and watch[0][0] <= now:
            _, flow = watch.popleft()
            if flow.alive and flow.synack_at < 0 and flow.state == State.SYN_RECV:
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
