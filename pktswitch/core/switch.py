"""The switch: one packet in, a verdict out, with the rewrite done in place.

Sans-I/O: `process(length, now)` works on the packet the caller put in `switch.buf`, and
returns True when `buf[:length]` (rewritten) must be written back to the TUN device, False
when it is dropped. It never reads a file descriptor or the clock; `now` is passed in.

Per packet, in Katran's order: the native call parses the packet, finds its flow, moves the
flow's state on an RST, SYN, FIN or ACK (through the grid of core/tcpstate.py, loaded into
C), times the handshake and the first response, rewrites and counts it (the fast
path: no Python work beyond this call; what C changed comes back as events, applied by
take_events before Python decides on the next packet). C opens every new flow too, from the
program each service's scheduler is compiled into (core/ahead.py), and drops with a named
reason what opens none (not a SYN, no service, the access list, no backend, a full table,
no SNAT pair, a tuple in use): pktswitch does not answer strays with RST, so a scan or a
late packet gets the silence a firewall gives, and the counters say what happened. ICMP is
C's too (native/icmp.c): echo replies for the VIPs, errors about a flow translated. C hands
Python back only a packet that found the event ring full (stats: to_python), which goes
through C again once the events are applied.

This module is the packet path; the rest of the switch is in parts, one concern a module
(core/base.py names them): the events C reports, the services registry and reload, passive
health, tracing and the views of the control API.

Two NAT modes:
- fullnat: client:cport > VIP:vport  becomes  SNAT:sport > backend:bport, and back;
- nat:     client:cport > VIP:vport  becomes  client:cport > backend:bport; the backend's
           replies are routed back through the switch (policy routing set up by io/).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING

from pktswitch._native import ffi, lib
from pktswitch.core import packet
from pktswitch.core.events import EVENT_BATCH, Events
from pktswitch.core.flows import DEFAULT_MAX_FLOWS, STATES, Flow, FlowTable
from pktswitch.core.nat import DEFAULT_PORTS, SnatPool
from pktswitch.core.passive import Passive, SynWatch
from pktswitch.core.registry import MAX_WEIGHT, Registry
from pktswitch.core.service import ServiceState, service_state
from pktswitch.core.tcpstate import (
    State,
)
from pktswitch.core.trace import Subscription
from pktswitch.core.tracing import Tracing
from pktswitch.core.views import Views
from pktswitch.sched.pool import BackendState

if TYPE_CHECKING:
    from pktswitch.control.config_schema import Config

__all__ = ["MAX_WEIGHT", "MODES", "ServiceState", "Switch"]  # (the config checks against them)

MAX_PACKET = 65535 + lib.PKS_VNET_HDR_LEN  # the largest IP packet after a virtio_net_hdr

MODES = ("fullnat", "nat")
SYN_COOKIES = ("auto", "on", "off")  # auto: while half of the half-open share is taken

# seconds between looks at the SNAT queues of backends let go: a sixth of a backend's
# TIME_WAIT (60 s, which the queue waits out), so a queue goes at most 10 s after it may
SNAT_SWEEP = 10.0
# the client table (native/pks_clients.h) is swept of entries that hold nothing a slice at a
# time, every CLIENT_SWEEP seconds: the whole table in CLIENT_SWEEP_SLICES slices (5 s)
CLIENT_SWEEP = 0.1
CLIENT_SWEEP_SLICES = 50


class Switch(Events, Registry, Passive, Tracing, Views):
    def __init__(
        self,
        services: list[ServiceState],
        mode: str = "fullnat",
        snat: list[str] | tuple[str, ...] = (),
        max_flows: int = DEFAULT_MAX_FLOWS,
        timeouts: dict[State, float] | None = None,
        snat_ports: tuple[int, int] = DEFAULT_PORTS,
        seed: int | None = None,
        vnet: bool = False,
        snat_start: int | None = None,
        max_half_open: int | None = None,
        hash_secret: bytes | None = None,
        syn_cookies: str = "off",
    ) -> None:
        """`hash_secret`: what iphash and maglev hash clients with (None: a random one);
        `syn_cookies`: one of SYN_COOKIES (native/cookie.c; the config's default is auto)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "fullnat" and not snat:
            raise ValueError("fullnat needs at least one SNAT address")
        self.mode = mode
        self.hash_secret = hash_secret if hash_secret is not None else os.urandom(32)
        self.set_vnet(vnet)
        self._set_services(services)
        self.retired_services: list[ServiceState] = []  # removed by a reload, flows left
        self.snat = list(snat)
        self._snat_ints = [int.from_bytes(packet.ip_bytes(a), "big") for a in self.snat]
        self.pool = SnatPool(max(1, len(self.snat)), snat_ports, snat_start)
        # endpoints of backends let go whose SNAT queue waits out their TIME_WAITs (_sweep)
        self._unused: set[tuple[bytes, int]] = set()
        self._next_sweep = 0.0
        self._next_client_sweep = 0.0
        self.table = FlowTable(max_flows, timeouts, seed, max_half_open)
        tab = self.table.tab
        # C opens every flow (core/ahead.py), taking SNAT pairs from the pool
        if mode == "fullnat":
            rc = lib.pks_table_set_snat(tab, self.pool.ptr, self._snat_ints, len(self.snat))
        else:
            rc = lib.pks_table_set_snat(tab, ffi.NULL, ffi.NULL, 0)
        if rc != 0:
            raise ValueError(f"at most {lib.PKS_SNAT_ADDRS} SNAT addresses, got {len(self.snat)}")
        self._endpoints: dict[int, int] = {}  # id(backend) -> its SNAT pool endpoint
        if lib.pks_table_set_hash_key(tab, self.hash_secret, len(self.hash_secret)) != 0:
            raise ValueError(f"a hash secret is at most {lib.PKS_HASH_KEY_MAX} bytes")
        self._cookie_key = os.urandom(32)  # a cookie is this switch's only: never shared
        self.set_syn_cookies(syn_cookies)
        for svc in self.services:
            self._schedule_ahead(svc)
        self.buf = bytearray(MAX_PACKET)
        self.bufp = ffi.from_buffer("uint8_t[]", self.buf, require_writable=True)
        self.meta = ffi.new("pks_meta *")
        self._events = ffi.new("pks_event[]", EVENT_BATCH)
        self._event_bytes = ffi.buffer(self._events)
        # counters: every packet read ends in exactly one of forwarded / dropped[reason]
        self.rx = 0
        self.fast = 0
        self.forwarded = 0
        self.dropped: Counter[str] = Counter()
        self.flows_created = 0
        self.flows_expired: Counter[str] = Counter()  # by state at expiry
        self.flows_reused = 0  # SYNs that replaced a TIME_WAIT/CLOSE flow
        self.flows_reset = 0  # flows ended by the switch (their backend went down)
        self.flows_evicted = 0  # half-open flows ended early to make room for a new SYN
        self.flows_answered = 0  # one-packet flows ended by the answer to each datagram
        # flows ended early to give their SNAT pair to a new one, by state (TIME_WAIT, CLOSE,
        # SYN_RECV): every pair toward the backend was in use
        self.flows_reclaimed: Counter[str] = Counter()
        self._created_per_s: dict[int, int] = {}  # whole second -> flows created in it
        self.last_drop = ""  # the reason the last packet dropped was dropped for
        self.subscriptions: list[Subscription] = []
        # passive health signals: new flows to watch for a SYN-ACK, and signals seen
        self._syn_watch = SynWatch()
        self._passive: list[tuple[ServiceState, BackendState, str]] = []

    @classmethod
    def from_config(cls, cfg: Config, seed: int | None = None) -> Switch:
        services = [service_state(s) for s in cfg.services]
        sw = cfg.switch
        return cls(
            services,
            mode=sw.mode,
            snat=sw.snat,
            max_flows=sw.max_flows,
            max_half_open=sw.max_half_open,
            timeouts=cfg.timeouts,
            snat_ports=sw.snat_ports,
            seed=seed,
            hash_secret=sw.hash_secret,
            syn_cookies=sw.syn_cookies,
        )

    def set_syn_cookies(self, mode: str) -> None:
        """SYN cookies on, off, or (auto) while half of the half-open share is taken: written
        into C again whenever the share changes."""
        if mode not in SYN_COOKIES:
            raise ValueError(f"syn_cookies must be one of {SYN_COOKIES}, got {mode!r}")
        self.syn_cookies = mode
        half = max(1, self.table.max_half_open // 2)
        start = {"on": 0, "off": lib.PKS_NONE, "auto": half}[mode]
        lib.pks_table_set_cookies(self.table.tab, start, self._cookie_key, len(self._cookie_key))

    def set_vnet(self, on: bool) -> None:
        """Packets start with a virtio_net_hdr (the TUN device has offloads on) or not."""
        self.vnet = int(on)
        self._hdr = lib.PKS_VNET_HDR_LEN if on else 0

    # ------------------------------------------------------------------ packets
    def process(self, length: int, now: float) -> bool:
        """Decide on the packet in buf[:length]; True: write it back (rewritten)."""
        self.rx += 1
        tab = self.table.tab  # (_through_c's work, written out: this is the hot path)
        verdict = lib.pks_process(tab, self.bufp, length, now, self.meta, self.vnet)
        if tab.ev_count:
            self.take_events()
        if verdict == packet.VERDICT_FAST:
            self.fast += 1
            self.forwarded += 1
            return True
        return self.decide(verdict, now)

    def out_length(self) -> int:
        """The bytes of buf to write after process() said True: the packet C made of the one
        read (the same length, but for a SYN cookie's packets: native/cookie.c)."""
        meta = self.meta
        return int(meta.hdr + meta.ip_len)

    def count_fast(self, n: int) -> None:
        """Count n packets the native drain loop read and forwarded by itself."""
        self.rx += n
        self.fast += n
        self.forwarded += n

    def after_native(self, verdict: int, now: float) -> bool:
        """A packet the native drain loop read and left to Python (see io/loop.py)."""
        self.rx += 1
        if self.table.tab.ev_count:
            self.take_events()
        return self.decide(verdict, now)

    def decide(self, verdict: int, now: float) -> bool:
        """Python's part for a packet the native call did not forward itself: `meta` holds
        what pks_process found, the packet is in buf. True: write it back."""
        meta = self.meta
        if verdict == packet.VERDICT_DROP:
            self.last_drop = reason = packet.PARSE_ERRORS[meta.err]
            self.dropped[reason] += 1
            if meta.err == packet.ACL_DENIED:
                self._by_vip[meta.daddr4, meta.dport].denied += 1
            elif meta.err in packet.CLIENT_LIMITS:
                self._by_vip[meta.daddr4, meta.dport].limited[reason] += 1
            return False
        if meta.slow == packet.SLOW_EVENTS:
            # C had no room in the event ring to say what it would do: with it emptied, it has
            self.take_events()
            return self._through_c(meta.hdr + meta.ip_len, now)
        # C decides every other packet itself; one it left is a switch that did not set it up
        raise RuntimeError(f"C left a packet to Python ({packet.SLOW_REASONS[meta.slow]})")

    def _through_c(self, length: int, now: float) -> bool:
        """The packet (again) through C, then what C left of it through Python."""
        tab = self.table.tab
        verdict = lib.pks_process(tab, self.bufp, length, now, self.meta, self.vnet)
        if tab.ev_count:
            self.take_events()
        if verdict == packet.VERDICT_FAST:
            self.fast += 1
            self.forwarded += 1
            return True
        return self.decide(verdict, now)

    def count_drop(self, reason: str) -> None:
        """Count a packet the I/O layer had to drop (e.g. the core raised on it)."""
        self.dropped[reason] += 1

    def _drop(self, reason: str) -> bool:
        self.last_drop = reason
        self.dropped[reason] += 1
        return False

    # ------------------------------------------------------------------- timers
    def next_due(self) -> float | None:
        return self.table.next_due()

    def expire(self, now: float) -> int:
        """Expire every flow idle past its timeout; returns how many. Every SNAT_SWEEP
        seconds, also the SNAT queues of backends let go (_sweep)."""
        n = 0
        for flow in list(self.table.due(now)):
            self._expire(flow, now)
            n += 1
        if self._unused and now >= self._next_sweep:
            self._next_sweep = now + SNAT_SWEEP
            self._sweep(now)
        clients = self.table.tab.clients
        if clients != ffi.NULL and now >= self._next_client_sweep:
            self._next_client_sweep = now + CLIENT_SWEEP
            size = clients.mask + 1
            lib.pks_clients_sweep(self.table.tab, now, -(-size // CLIENT_SWEEP_SLICES))
        return n

    def _expire(self, flow: Flow, now: float, counted: bool = True) -> None:
        """End a flow. `counted`: in flows_expired (idle timeout, or replaced by a reused
        port); evictions and resets have counters of their own."""
        c = self.table.native(flow)
        if counted:
            self.flows_expired[STATES[c.state].name] += 1
        if c.has_snat:
            backend = self.table.backends[c.backend]
            self.pool.free(backend.endpoint, (c.snat_addr, c.snat_port), now)
        self.table.remove(flow)

    # ------------------------------------------------------------------ control
