"""What the control API shows: flows, backends, stats, and `which` (Katran's simulator)."""

from __future__ import annotations

from typing import Any

from pktswitch._native import ffi, lib
from pktswitch.core import packet
from pktswitch.core.base import RATE_WINDOW, SwitchBase
from pktswitch.core.flows import STATES, Flow, timeout_of
from pktswitch.sched.health_policy import state_name


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


class Views(SwitchBase):
    def which(self, service: str, client: str, cport: int) -> dict[str, Any]:
        """The backend a new flow from client:cport would get now, and why: nothing is sent
        and nothing changes (Katran's simulator)."""
        svc = self.service(service)
        picked = self._peek(svc, packet.ip_bytes(client), cport)
        if picked is None:
            return {"service": service, "backend": None, "reason": "no backend takes new flows"}
        b, reason = picked
        return {
            "service": service,
            "client": f"{client}:{cport}",
            "scheduler": svc.scheduler.name,
            "backend": b.name,
            "address": f"{b.ip}:{b.port}",
            "reason": reason,
        }

    # ------------------------------------------------------------------ reading
    def flow_view(self, flow: Flow, now: float) -> dict[str, Any]:
        """One flow as the control API and `pktswitch flows` show it (read from its C record
        once: a listing describes every flow)."""
        nf = self.table.native(flow)
        k0, k1 = nf.key[0], nf.key[1]
        table = self.table
        timeout = timeout_of(nf)
        return {
            "protocol": packet.PROTOCOLS[k0.proto],
            "service": table.services[nf.service].name,
            "client": f"{packet.ip_str(k0.saddr)}:{k0.sport}",
            "vip": f"{packet.ip_str(k0.daddr)}:{k0.dport}",
            "snat": f"{self.snat[nf.snat_addr]}:{nf.snat_port}" if nf.has_snat else None,
            "backend": table.backends[nf.backend].name,
            "backend_address": f"{packet.ip_str(k1.saddr)}:{k1.sport}",
            "state": STATES[nf.state].name,
            "timeout": timeout,
            "expires_in": round(max(0.0, nf.last_seen + timeout - now), 3),
            "age": round(now - nf.created, 9),  # (to the ns: the CLI sorts flows by it)
            "packets_in": nf.pkts[0],
            "bytes_in": nf.bytes[0],
            "packets_out": nf.pkts[1],
            "bytes_out": nf.bytes[1],
            "reason": table.reason_of(nf),
        }

    def flows(self, now: float) -> list[dict[str, Any]]:
        """Every flow as flow_view() shows it, oldest first."""
        return [self.flow_view(f, now) for f in sorted(self.table, key=lambda f: f.created)]

    def backends(self, now: float) -> list[dict[str, Any]]:
        """Every backend of every service with its counters (C's, read through: no walk of
        the flows)."""
        rows = []
        for svc in (*self.services, *self.retired_services):
            for b in (*svc.backends, *svc.retired):
                retired = b in svc.retired
                rows.append(
                    {
                        "service": svc.name,
                        "backend": b.name,
                        "address": f"{b.ip}:{b.port}",
                        "weight": 0 if retired else b.weight,
                        "health": "removed" if retired else state_name(b, svc.health, now),
                        "health_reason": b.health_reason,
                        "config_weight": b.config_weight,
                        "active": b.active,
                        "inactive": b.inactive,
                        "total": b.total,
                        "bytes_in": b.bytes_in,
                        "bytes_out": b.bytes_out,
                        "rtt_syn_ms": _ms(b.rtt_syn),
                        "rt_data_ms": _ms(b.rt_data),
                        "rt_ms": _ms(b.rt),
                        "samples": dict(b.samples),
                    }
                )
        return rows

    def new_flows_per_second(self, now: float) -> float:
        """New flows per second over the last RATE_WINDOW whole seconds."""
        second = int(now)
        n = sum(c for s, c in self._created_per_s.items() if second - RATE_WINDOW <= s < second)
        return n / RATE_WINDOW

    def stats(self, now: float) -> dict[str, Any]:
        tab = self.table.tab
        return {
            "mode": self.mode,
            "offload": bool(self.vnet),
            "packets_in": self.rx,
            "packets_forwarded": self.forwarded,
            "packets_fast_path": self.fast,
            "packets_dropped": sum(self.dropped.values()),
            "dropped": dict(self.dropped),
            "flows": len(self.table),
            "max_flows": self.table.max_flows,
            "half_open": self.table.half_open,
            "half_open_peak": self.table.half_open_peak,
            "max_half_open": self.table.max_half_open,
            "new_flows_per_second": self.new_flows_per_second(now),
            "flows_created": self.flows_created,
            "flows_opened_in_c": int(self.table.tab.opened),
            "to_python": {
                name: int(n)
                for name, n in zip(packet.SLOW_REASONS, self.table.tab.slow, strict=True)
                if n
            },
            "flows_expired": dict(self.flows_expired),
            "flows_reused": self.flows_reused,
            "flows_reset": self.flows_reset,
            "flows_evicted": self.flows_evicted,
            "flows_answered": self.flows_answered,
            "flows_reclaimed": dict(self.flows_reclaimed),
            "icmp_echo_replies": int(tab.icmp_echo_replies),
            "tcp_rst_in_window": int(tab.rst_in_window),
            "syn_cookies": {
                "mode": self.syn_cookies,
                "active": bool(lib.pks_cookies_active(tab)),
                "sent": int(tab.cookies_sent),
                "opened": int(tab.cookie_opens),
            },
            "icmp_errors_translated": {
                "to_backend": int(tab.icmp_errors[0]),
                "to_client": int(tab.icmp_errors[1]),
            },
            "acl_denied": {s.name: s.denied for s in self.services if s.acl is not None},
            "client_limited": {
                s.name: dict(s.limited) for s in self.services if s.per_client is not None
            },
            "clients_tracked": int(tab.clients.count) if tab.clients != ffi.NULL else 0,
            "snat_exhausted": self.pool.exhausted,
            "snat_early_reuse": self.pool.early_reuse,
            "snat_in_use": {a: self.pool.in_use_by_addr[i] for i, a in enumerate(self.snat)},
            "snat_queues": self.pool.queues,
            "tracing": len(self.subscriptions),
        }
