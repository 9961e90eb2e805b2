"""The switch: one packet in, a verdict out, with the rewrite done in place.

Sans-I/O: `process(length, now)` works on the packet the caller put in `switch.buf`, and
returns True when `buf[:length]` (rewritten) must be written back to the TUN device, False
when it is dropped. It never reads a file descriptor or the clock; `now` is passed in.

Per packet, in Katran's order: the native call parses the packet, finds its flow and, for a
packet carrying no SYN or RST, moves the flow's state on a FIN or ACK (through the grid of
core/tcpstate.py, loaded into C), times the first response, rewrites and counts it (the fast
path: no Python work beyond this call; what C changed comes back as events, applied by
take_events before Python decides on the next packet). A client's SYN to a service whose
scheduler Python wrote into C (rr and wrr as a period of answers, iphash and maglev as their
table, lc and wlc as their backends, picked by the flows C counts: core/ahead.py) is opened
by C as well, and reported as an event. Otherwise Python decides: a known flow goes through
the TCP state table, then is rewritten; an unknown one may only be a SYN (without ACK) to a
service, which schedules a backend, takes an SNAT port and inserts the flow; both sides
open a flow the same way (tests/unit/test_ahead.py holds them to it, byte for byte).
Anything else is counted by reason and dropped: pktswitch does not answer strays with
RST, so a scan or a late packet gets the silence a firewall gives, and the counters say what
happened.

Two NAT modes:
- fullnat: client:cport > VIP:vport  becomes  SNAT:sport > backend:bport, and back;
- nat:     client:cport > VIP:vport  becomes  client:cport > backend:bport; the backend's
           replies are routed back through the switch (policy routing set up by io/).
"""

from __future__ import annotations

import struct
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from pktswitch._native import ffi, lib
from pktswitch.core import icmp, packet
from pktswitch.core.acl import CompiledAcl
from pktswitch.core.ahead import Ahead
from pktswitch.core.flows import (
    DEFAULT_MAX_FLOWS,
    STATES,
    Flow,
    FlowTable,
    KeyBusy,
    TableFull,
)
from pktswitch.core.nat import DEFAULT_PORTS, SnatPool
from pktswitch.core.tcpstate import (
    ACK,
    FIN,
    INPUT,
    REUSABLE,
    RST,
    SYN,
    State,
    next_state,
)
from pktswitch.core.trace import Record, Subscription
from pktswitch.sched.base import Scheduler
from pktswitch.sched.hashing import HASH_KEY
from pktswitch.sched.health_policy import HealthPolicy, effective_weight, state_name
from pktswitch.sched.pool import BackendState
from pktswitch.sched.registry import make

MAX_PACKET = 65535 + lib.PKS_VNET_HDR_LEN  # the largest IP packet after a virtio_net_hdr

MODES = ("fullnat", "nat")
MAX_WEIGHT = 65535  # ipvsadm: weights 0..65535; 0 takes no new flows

RATE_WINDOW = 10  # seconds over which "new flows per second" is averaged
EVENT_BATCH = 256  # events moved out of the native ring per call
# seconds between looks at the SNAT queues of backends let go: a sixth of a backend's
# TIME_WAIT (60 s, which the queue waits out), so a queue goes at most 10 s after it may
SNAT_SWEEP = 10.0
# pks_event as packed bytes: slot, kind, from, to, dir, gen, backend, reason, service, t,
# value, bytes[2]
EVENT = struct.Struct("<IBBBBIIIIddQQ")
SPARE_LOW = lib.PKS_SPARE // 2  # below this many spare slots in C, Python lends more
EV_STATE, EV_SYNACK = lib.PKS_EV_STATE, lib.PKS_EV_SYNACK
EV_OPEN, EV_END, EV_EVICT = lib.PKS_EV_OPEN, lib.PKS_EV_END, lib.PKS_EV_EVICT
NO_REASON = lib.PKS_NONE  # a flow C opened for iphash, maglev, lc, wlc, before its OPEN event
OPENED = (State.NONE, State.SYN_RECV)  # a flow's first transition, on the client's SYN


NO_HEALTH = HealthPolicy(check="none", passive=False)


@dataclass(slots=True, eq=False, weakref_slot=True)  # (weakref: tests see it let go)
class ServiceState:
    name: str
    vip: str
    port: int
    scheduler: Scheduler
    backends: list[BackendState]
    health: HealthPolicy = NO_HEALTH
    acl: CompiledAcl | None = None  # None: every client may connect
    denied: int = 0  # SYNs refused by the acl
    # the scheduler as configured: its name and options, to tell what a reload changes
    sched_spec: tuple[str, tuple[tuple[str, Any], ...]] = ("", ())
    # backends a reload removed: no new flows, kept until their last flow ends
    retired: list[BackendState] = field(default_factory=list)
    vip_bytes: bytes = b""
    # its scheduler written into C (a period or a table), which then opens its flows
    # (core/ahead.py)
    ahead: Ahead | None = None

    def __post_init__(self) -> None:
        self.vip_bytes = packet.ip_bytes(self.vip)
        if not self.sched_spec[0]:
            self.sched_spec = (self.scheduler.name, ())


def _service_state(s: Any) -> ServiceState:
    """A service of the config (control/config.py's Service) as the switch runs it."""
    return ServiceState(
        name=s.name,
        vip=s.vip,
        port=s.port,
        scheduler=make(s.scheduler, **dict(s.options)),
        backends=[BackendState(b.name, b.ip, b.port, b.weight) for b in s.backends],
        health=s.health or NO_HEALTH,
        acl=s.acl.compile() if s.acl is not None else None,
        sched_spec=(s.scheduler, tuple(s.options)),
    )


def _spec(sched_spec: tuple[str, tuple[tuple[str, Any], ...]]) -> str:
    name, options = sched_spec
    return " ".join([name, *(f"{k}={v}" for k, v in options)])


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


class Switch:
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
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "fullnat" and not snat:
            raise ValueError("fullnat needs at least one SNAT address")
        self.mode = mode
        self.set_vnet(vnet)
        self._set_services(services)
        self.retired_services: list[ServiceState] = []  # removed by a reload, flows left
        self.snat = list(snat)
        self._snat_ints = [int.from_bytes(packet.ip_bytes(a), "big") for a in self.snat]
        self.pool = SnatPool(max(1, len(self.snat)), snat_ports, snat_start)
        # endpoints of backends let go whose SNAT queue waits out their TIME_WAITs (_sweep)
        self._unused: set[tuple[bytes, int]] = set()
        self._next_sweep = 0.0
        self.table = FlowTable(max_flows, timeouts, seed, max_half_open)
        tab = self.table.tab
        # C opens flows itself for the services it can schedule (core/ahead.py), taking SNAT
        # pairs from the same pool; it knows at most PKS_SNAT_ADDRS SNAT addresses
        if mode == "fullnat":
            rc = lib.pks_table_set_snat(tab, self.pool.ptr, self._snat_ints, len(self.snat))
            self._ahead_ok = rc == 0
        else:
            self._ahead_ok = lib.pks_table_set_snat(tab, ffi.NULL, ffi.NULL, 0) == 0
        self._endpoints: dict[int, int] = {}  # id(backend) -> its SNAT pool endpoint
        if lib.pks_table_set_hash_key(tab, HASH_KEY, len(HASH_KEY)) != 0:
            raise RuntimeError("the native table refused the schedulers' hash key")
        tab.open_on = 1
        for svc in self.services:
            self._schedule_ahead(svc)
        self.buf = bytearray(MAX_PACKET)
        self._bufp = ffi.from_buffer("uint8_t[]", self.buf, require_writable=True)
        self.meta = ffi.new("pks_meta *")
        self._events = ffi.new("pks_event[]", EVENT_BATCH)
        self._event_bytes = ffi.buffer(self._events)
        if EVENT.size != ffi.sizeof("pks_event"):
            raise RuntimeError("native/pks_flow.h's pks_event and EVENT disagree")
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
        self.icmp_echo_replies = 0
        self.icmp_errors = [0, 0]  # errors about a flow, translated: [to backend, to client]
        self._quoted = ffi.new("pks_key *")  # the flow key an ICMP error is about
        self._nat = ffi.new("pks_nat *")  # and what its direction is rewritten to
        self._created_per_s: dict[int, int] = {}  # whole second -> flows created in it
        # what the last packet did, for tracing: set only on the paths that change them
        self.last_drop = ""
        self.last_transition: tuple[State, State] | None = None
        self.subscriptions: list[Subscription] = []
        # passive health signals: new flows to watch for a SYN-ACK, and signals seen
        self._syn_watch: deque[tuple[float, Flow]] = deque()
        self._passive: list[tuple[ServiceState, BackendState, str]] = []

    @classmethod
    def from_config(cls, cfg: Any, seed: int | None = None) -> Switch:
        services = [_service_state(s) for s in cfg.services]
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
        )

    def _set_services(self, services: list[ServiceState]) -> None:
        self.services = services
        self._by_vip = {(int.from_bytes(s.vip_bytes, "big"), s.port): s for s in services}
        self._vip_addrs = frozenset(addr for addr, _ in self._by_vip)

    def _endpoint(self, backend: BackendState) -> int:
        """The backend's queue in the SNAT pool, known to C too (C frees the pair of a flow
        it ends for a reused client port)."""
        ep = self._endpoints.get(id(backend))
        if ep is None:
            ep = self.pool.endpoint(backend.endpoint)
            number = self.table.backends.number(backend)  # registers it (until _let_go)
            if lib.pks_table_set_endpoint(self.table.tab, number, ep) != 0:
                raise MemoryError("no memory for the backend map")
            self._endpoints[id(backend)] = ep
        return ep

    def _schedule_ahead(self, svc: ServiceState) -> None:
        """Write the service's scheduler into C (its next period of answers, its hash table,
        or its backends for C to pick by load) and its access list, or leave the service to
        Python: a scheduler with none of these (lrt), one too large for C, or too many SNAT
        addresses."""
        if svc.ahead is None:
            svc.ahead = Ahead(self.table, self.table.services.number(svc))
        if not self._ahead_ok:
            svc.ahead.clear()
            return
        vip = int.from_bytes(svc.vip_bytes, "big")
        known = self._endpoint if self.mode == "fullnat" else None  # nat mode takes no pairs
        if svc.ahead.write(svc.scheduler, svc.backends, vip, svc.port, known):
            svc.ahead.write_acl(svc.acl)

    def _pick(self, svc: ServiceState, client: bytes, cport: int, peek: bool = False) -> Any:
        """The scheduler's answer for a new flow: from the period in C when the service is
        scheduled ahead (one sequence, whoever opens the flow)."""
        ahead = svc.ahead
        if ahead is not None and ahead.answers:
            return ahead.peek() if peek else ahead.pick()
        if peek:
            return svc.scheduler.peek(svc.backends, client, cport)
        return svc.scheduler.pick(svc.backends, client, cport)

    def set_vnet(self, on: bool) -> None:
        """Packets start with a virtio_net_hdr (the TUN device has offloads on) or not."""
        self.vnet = int(on)
        self._hdr = lib.PKS_VNET_HDR_LEN if on else 0

    # ------------------------------------------------------------------ packets
    def process(self, length: int, now: float) -> bool:
        """Decide on the packet in buf[:length]; True: write it back (rewritten)."""
        self.rx += 1
        meta = self.meta
        tab = self.table.tab
        verdict = lib.pks_process(tab, self._bufp, length, now, meta, self.vnet)
        if tab.ev_count:
            self.take_events()
        if verdict == packet.VERDICT_FAST:
            self.fast += 1
            self.forwarded += 1
            return True
        return self.decide(verdict, now)

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

    def take_events(self) -> None:
        """Apply what C did by itself (native/pks_flow.h, pks_event): flows opened and ended, state
        changes into and out of ESTABLISHED, SYN-ACKs and first responses timed. Called
        before Python decides on any packet, and after each batch, so Python's view of every
        flow is current. The events are read as one buffer of packed records (quicker than a
        cffi attribute per field)."""
        tab, table = self.table.tab, self.table
        backends = table.backends
        while True:
            n = lib.pks_events_take(tab, self._events, EVENT_BATCH)
            # each event carries what Python needs of its flow: C may have ended the flow
            # since (a SYN reusing its client port), and opened another in its slot
            for (
                slot,
                kind,
                was,
                to,
                way,
                gen,
                backend,
                reason,
                service,
                t,
                value,
                b0,
                b1,
            ) in EVENT.iter_unpack(self._event_bytes[: n * EVENT.size]):
                if kind == EV_STATE:
                    # C moved the state, timer and half-open list; the counts are Python's
                    self.last_transition = (STATES[was], STATES[to])
                    table.count_state(backend, was, to)
                elif kind == EV_OPEN:
                    self._opened(slot, gen, backend, reason, service, t, value, b1)
                elif kind in (EV_END, EV_EVICT):
                    # way 1: the new flow is in the slot already (the table was full)
                    self._ended(slot, was, backend, reason, b0, b1, kind == EV_EVICT, way == 1)
                elif kind == EV_SYNACK:  # (its flow may have ended since: the event says all)
                    self._answered(backend, to, value, t)
                else:
                    backends[backend].add_sample("data", value, t)
            if n < EVENT_BATCH:
                break
        if tab.nspare < SPARE_LOW:
            table.lend()

    def _opened(
        self,
        slot: int,
        gen: int,
        backend: int,
        reason: int,
        service: int,
        t: float,
        value: float,
        evicted: int,
    ) -> None:
        """C opened a flow for a client's SYN (a service scheduled ahead): Python's counts,
        and for a hashing scheduler the flow's reason (`value` is the client's slot), for
        lc and wlc too: from the counts now, which are C's at its pick, but for the flow C
        evicted to make room (`evicted`, its backend, or PKS_NONE): as Python, C picks
        before it evicts."""
        table = self.table
        b, svc = table.backends[backend], table.services[service]
        if reason != NO_REASON:
            table.reasons.hold_again(reason)
        else:
            c = table.tab.flows[slot]
            if c.used and c.gen == gen:  # (one C ended already has no reason to write)
                k = c.key[0]
                client = bytes(ffi.buffer(k.saddr, 4))
                gone = None if evicted == lib.PKS_NONE else table.backends[evicted]
                if gone is not None:
                    gone.inactive += 1  # the evicted flow, half-open, as it was at the pick
                text = svc.scheduler.reason_for(svc.backends, client, k.sport, int(value), b)
                if gone is not None:
                    gone.inactive -= 1
                c.reason = table.reasons.hold(text)
        b.inactive += 1  # SYN_RECV
        b.total += 1
        self._created(t)
        if svc.health.passive:
            c = table.tab.flows[slot]
            if c.used and c.gen == gen:
                self._syn_watch.append((t + svc.health.syn_timeout, Flow(table, slot)))

    def _ended(
        self,
        slot: int,
        was: int,
        backend: int,
        reason: int,
        b0: int,
        b1: int,
        evicted: bool,
        slot_taken: bool,
    ) -> None:
        """C ended a flow (and freed its SNAT pair) to open a new one: in TIME_WAIT or CLOSE,
        for its client's reused port, or the oldest half-open one, to make room. What
        _expire counts, from the event."""
        if evicted:
            self.flows_evicted += 1
        else:
            self.flows_reused += 1
            self.flows_expired[STATES[was].name] += 1
        b = self.table.backends[backend]
        b.closed_bytes[0] += b0
        b.closed_bytes[1] += b1
        self.table.ended(slot, backend, was, reason, slot_taken)

    def decide(self, verdict: int, now: float) -> bool:
        """Python's part for a packet the native call did not forward itself: `meta` holds
        what pks_process found, the packet is in buf. True: write it back."""
        meta = self.meta
        if verdict == packet.VERDICT_DROP:
            self.last_drop = reason = packet.PARSE_ERRORS[meta.err]
            self.dropped[reason] += 1
            return False
        if meta.slot < 0:
            if meta.key.proto == packet.PROTO_ICMP:
                return self._icmp()
            return self._new_flow(now)
        flow = self.table.flow(meta.slot)
        flags = meta.tcp_flags
        if meta.dir == INPUT and flags & (SYN | ACK | RST | FIN) == SYN and flow.state in REUSABLE:
            # the client reused its port for a new connection: finish the old flow first
            self.flows_reused += 1
            self._expire(flow, now)
            return self._new_flow(now)
        if flags & RST and meta.dir != INPUT and flow.synack_at < 0 and flow.service.health.passive:
            self._passive.append((flow.service, flow.backend, "RST in answer to a SYN"))
        if flags & SYN:
            if meta.dir == INPUT:
                flow.syns += 1
            elif flags & ACK:
                self._synack(self.table.native(flow), now)
        state = next_state(flow.state, meta.dir, flags)
        if state != flow.state:
            self.last_transition = (flow.state, state)
            self.table.set_state(flow, state, now)
        lib.pks_apply(self.table.tab, self._bufp, meta)
        self.forwarded += 1
        return True

    def _synack(self, c: Any, now: float) -> None:
        """The backend's SYN-ACK on the flow whose C record is c, seen by Python (C did not
        decide on it; C reports the first one it decides on as an event)."""
        if c.synack_at >= 0:
            return
        c.synack_at = now
        self._answered(c.backend, c.syns, now - c.created, now)

    def _answered(self, backend: int, syns: int, handshake: float, now: float) -> None:
        """A backend's first SYN-ACK on a flow: it answers, and the handshake time."""
        b = self.table.backends[backend]
        if now >= b.ejected_until:
            b.ejections = 0  # it answers again: the next ejection is short
        if syns == 1:  # Karn: a retransmitted SYN makes the sample ambiguous
            b.add_sample("syn", handshake, now)

    def count_drop(self, reason: str) -> None:
        """Count a packet the I/O layer had to drop (e.g. the core raised on it)."""
        self.dropped[reason] += 1

    def _drop(self, reason: str) -> bool:
        self.last_drop = reason
        self.dropped[reason] += 1
        return False

    def _new_flow(self, now: float) -> bool:
        meta = self.meta
        flags = meta.tcp_flags
        if flags & (SYN | ACK | RST | FIN) != SYN:
            return self._drop("no_flow")  # a mid-connection packet of a flow we do not know
        dst, dport = meta.daddr4, meta.dport
        svc = self._by_vip.get((dst, dport))
        if svc is None:
            return self._drop("no_service")
        client, cport = meta.saddr4, meta.sport
        if svc.acl is not None and not svc.acl.permits(client):
            svc.denied += 1
            return self._drop("acl_denied")
        table = self.table
        if table.full() and not table.half_open:
            return self._drop("table_full")  # every place is an established (or closing) flow
        picked = self._pick(svc, client.to_bytes(4, "big"), cport)
        if picked is None:
            return self._drop("no_backend")
        backend, reason = picked
        snat: tuple[int, int] | None = None
        if self.mode == "fullnat":
            self._endpoint(backend)
            snat = self.pool.alloc(backend.endpoint, now)
            if snat is None:
                return self._drop("snat_exhausted")
            to = (self._snat_ints[snat[0]], snat[1], backend.ip_int, backend.port)
        else:
            to = (client, cport, backend.ip_int, backend.port)
        while table.half_open_full() or table.full():
            # room, from the oldest half-open flows, once the SYN is sure to be taken: under
            # a SYN flood the table turns over its half-open share and established flows keep
            # their places (a loop: a reload may have lowered the limit)
            oldest = table.oldest_half_open()
            assert oldest is not None  # full() with none half-open was refused above
            self.flows_evicted += 1
            self._expire(oldest, now, counted=False)
        try:
            flow = table.open(self._bufp, meta, to, now, svc, backend, reason, snat)
        except (TableFull, KeyBusy) as e:
            if snat is not None:
                self.pool.free(backend.endpoint, snat, now)
            return self._drop("table_full" if isinstance(e, TableFull) else "tuple_busy")
        backend.total += 1
        self._created(now)
        self.last_transition = OPENED  # the SYN: sNO -> sSR, set by open()
        if svc.health.passive:
            self._syn_watch.append((now + svc.health.syn_timeout, flow))
        self.forwarded += 1
        return True

    def _created(self, now: float) -> None:
        self.flows_created += 1
        second = int(now)
        per_s = self._created_per_s
        per_s[second] = per_s.get(second, 0) + 1
        if len(per_s) > RATE_WINDOW + 1:
            for old in [k for k in per_s if k < second - RATE_WINDOW]:
                del per_s[old]

    def _icmp(self) -> bool:
        """An ICMP packet (see core/icmp.py): an echo request to a VIP is answered, an error
        about a flow is translated toward the flow's other side; the rest is dropped."""
        meta, buf, ptr = self.meta, self.buf, self._bufp
        ip = meta.hdr
        l4, end = ip + meta.l4_off, ip + meta.ip_len
        if lib.pks_csum(ptr + l4, end - l4, 0) != 0:
            return self._drop("icmp_checksum")
        kind = meta.icmp_type
        if kind == icmp.ECHO_REQUEST and meta.daddr4 in self._vip_addrs:
            icmp.echo_reply(buf, ptr, ip, l4, end)
            self.icmp_echo_replies += 1
            self.forwarded += 1
            return True
        if kind not in icmp.ERRORS:
            return self._drop("icmp_other")
        quoted = icmp.quoted_tcp(buf, l4, end)
        if quoted is None:
            return self._drop("icmp_malformed")
        qsrc, qsport, qdst, qdport = quoted
        # the quoted packet went out of the switch; the flow knows its answer's key
        k = self._quoted
        k.family, k.proto, k.sport, k.dport = 4, 6, qdport, qsport
        ffi.memmove(k.saddr, qdst, 4)
        ffi.memmove(k.daddr, qsrc, 4)
        e = lib.pks_table_lookup(self.table.tab, k)
        if e < 0:
            return self._drop("icmp_no_flow")
        way = e & 1  # the error travels like a packet of this direction
        nat = self._nat
        lib.pks_flow_nat(self.table.tab, e >> 1, way, nat)
        saddr, daddr = bytes(ffi.buffer(nat.saddr, 4)), bytes(ffi.buffer(nat.daddr, 4))
        # nat mode keeps the sender of an error from the client side (the backend routes
        # back through the switch anyway); otherwise it speaks for the VIP or SNAT address
        keep_sender = self.mode == "nat" and way == 0
        icmp.translate_error(
            buf,
            ptr,
            ip,
            l4,
            end,
            (None if keep_sender else saddr, daddr),
            (daddr, nat.dport),
            (saddr, nat.sport),
        )
        self.icmp_errors[way] += 1
        self.forwarded += 1
        return True

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
        return n

    def _sweep(self, now: float) -> None:
        """Drop the SNAT queues of endpoints (address and port) no backend uses any more,
        once their pairs' TIME_WAITs are over (core/nat.py): a queue holds 12 bytes per pair
        of the pool freed toward it, and backends that come and go at new addresses
        (reloads, autoscaling) would pile them up. A backend at one of those endpoints again
        keeps its queue (and its ports' order)."""
        used = {
            b.endpoint
            for svc in (*self.services, *self.retired_services)
            for b in (*svc.backends, *svc.retired)
        }
        self._unused = {e for e in self._unused if e not in used and not self.pool.drop(e, now)}

    def _expire(self, flow: Flow, now: float, counted: bool = True) -> None:
        """End a flow. `counted`: in flows_expired (idle timeout, or replaced by a reused
        port); evictions and resets have counters of their own."""
        c = self.table.native(flow)
        if counted:
            self.flows_expired[STATES[c.state].name] += 1
        backend = self.table.backends[c.backend]
        if c.has_snat:
            self.pool.free(backend.endpoint, (c.snat_addr, c.snat_port), now)
        backend.closed_bytes[0] += c.bytes[0]
        backend.closed_bytes[1] += c.bytes[1]
        self.table.remove(flow)

    # ------------------------------------------------------------------ control
    def service(self, name: str) -> ServiceState:
        for svc in self.services:
            if svc.name == name:
                return svc
        known = ", ".join(s.name for s in self.services)
        raise ValueError(f"no service named {name!r} (services: {known})")

    def backend(self, service: str, name: str) -> tuple[ServiceState, BackendState]:
        svc = self.service(service)
        for b in svc.backends:
            if b.name == name:
                return svc, b
        known = ", ".join(b.name for b in svc.backends)
        raise ValueError(f"service {service!r} has no backend {name!r} (backends: {known})")

    def which(self, service: str, client: str, cport: int) -> dict[str, Any]:
        """The backend a new flow from client:cport would get now, and why: nothing is sent
        and nothing changes (Katran's simulator)."""
        svc = self.service(service)
        picked = self._pick(svc, packet.ip_bytes(client), cport, peek=True)
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

    def set_weight(self, service: str, backend: str, weight: int, now: float) -> dict[str, Any]:
        """A new weight for new flows; flows already on the backend stay where they are."""
        if not 0 <= weight <= MAX_WEIGHT:
            raise ValueError(f"weight must be 0..{MAX_WEIGHT}, got {weight}")
        _, b = self.backend(service, backend)
        old, b.config_weight = b.config_weight, weight
        self.refresh(now)
        return {"service": service, "backend": backend, "weight": weight, "was": old}

    def set_drain(self, service: str, backend: str, drain: bool, now: float) -> dict[str, Any]:
        """Drain: no new flows, the existing ones stay until they end."""
        _, b = self.backend(service, backend)
        b.draining = drain
        b.health_reason = "draining (operator)" if drain else "drain ended (operator)"
        b.changed_at = now
        self.refresh(now)
        return {
            "service": service,
            "backend": backend,
            "draining": drain,
            "flows": b.active + b.inactive,
        }

    def reconfigure(self, cfg: Any, now: float) -> list[str]:
        """Apply a re-read config (control/config.py's Config) without touching a flow:
        services and backends are matched by name (a backend by name and address); a
        matched one keeps its counters, health and flows and takes the new weight, scheduler,
        health policy and acl. A removed backend or service takes no new flows; its flows go
        on until they end. New timeouts apply from each flow's next state change. Whatever
        needs a restart (control/config.py: restart_keys) must be refused before this.
        Returns what changed, one line each."""
        changes: list[str] = []
        self.take_events()  # flows C opened hold reasons of the periods about to be replaced
        for svc in self.services:  # before any scheduler, weight or backend changes
            if svc.ahead is not None:
                svc.ahead.catch_up(svc.scheduler, svc.backends)
        old = {s.name: s for s in self.services}
        services = []
        for spec in cfg.services:
            svc = old.pop(spec.name, None)
            if svc is None:
                services.append(_service_state(spec))
                changes.append(f"{spec.name}: added, {spec.vip}:{spec.port}")
                continue
            services.append(svc)
            changes += self._reconfigure_service(svc, spec)
        for svc in old.values():
            if svc.ahead is not None:
                svc.ahead.clear()
            svc.retired += svc.backends
            svc.backends = []
            self.retired_services.append(svc)
            changes.append(f"{svc.name}: removed (its flows stay until they end)")
        self._set_services(services)
        for state, seconds in cfg.timeouts.items():
            was = self.table.timeouts.get(state)
            if was != seconds:
                changes.append(f"timeout {state.name}: {was:g} -> {seconds:g} s")
        self.table.set_timeouts(cfg.timeouts)
        half_open = cfg.switch.max_half_open
        if half_open != self.table.max_half_open:
            changes.append(f"max_half_open: {self.table.max_half_open} -> {half_open}")
            self.table.max_half_open = half_open
        self.refresh(now, schedule=False)  # its lines would repeat the weight changes above
        for svc in self.services:
            svc.scheduler.update(svc.backends)
            self._schedule_ahead(svc)
        self._let_go()  # (removed here with no flow: said above already)
        return changes

    def _reconfigure_service(self, svc: ServiceState, spec: Any) -> list[str]:
        changes = []
        n = svc.name
        sched_spec = (spec.scheduler, tuple(spec.options))
        if sched_spec != svc.sched_spec:
            svc.scheduler = make(spec.scheduler, **dict(spec.options))
            changes.append(f"{n}: scheduler {_spec(svc.sched_spec)} -> {_spec(sched_spec)}")
            svc.sched_spec = sched_spec
        health = spec.health or NO_HEALTH
        if health != svc.health:
            svc.health = health
            changes.append(f"{n}: health policy changed")
            for b in svc.backends:  # what no check or signal will clear any more, cleared
                if health.check == "none" and not b.up:
                    b.up, b.streak = True, 0
                    b.health_reason = "up: active checks turned off by a reload"
                if not health.passive:
                    b.ejected_until, b.ejections = 0.0, 0
        acl = spec.acl.compile() if spec.acl is not None else None
        if (acl and (acl.allow, acl.deny)) != (svc.acl and (svc.acl.allow, svc.acl.deny)):
            svc.acl = acl
            changes.append(f"{n}: access control changed")
        current = {(b.name, b.ip, b.port): b for b in svc.backends}
        backends = []
        for bs in spec.backends:
            b = current.pop((bs.name, bs.ip, bs.port), None)
            if b is None:
                b = BackendState(bs.name, bs.ip, bs.port, bs.weight)
                changes.append(f"{n}/{b.name}: added, {b.ip}:{b.port} weight {bs.weight}")
            elif b.config_weight != bs.weight:
                changes.append(f"{n}/{b.name}: weight {b.config_weight} -> {bs.weight}")
                b.config_weight = bs.weight
            backends.append(b)
        for b in current.values():
            changes.append(
                f"{n}/{b.name}: removed; its flows stay until they end "
                f"({b.active} established, {b.inactive} other)"
            )
            svc.retired.append(b)
        svc.backends = backends
        return changes

    def refresh(self, now: float, schedule: bool = True) -> list[str]:
        """Recompute every backend's effective weight from its health; tell the schedulers
        whose backends changed, and write their periods into C again; then let go of removed
        backends and services whose last flow has ended (_let_go). With `schedule` False
        the caller writes every period after, and lets go after that. Returns what changed,
        for the log."""
        self.take_events()  # flows C opened hold reasons of the periods about to be replaced
        changes = []
        for svc in self.services:
            weights = [effective_weight(b, svc.health, now) for b in svc.backends]
            if all(w == b.weight for w, b in zip(weights, svc.backends, strict=True)):
                continue
            if svc.ahead is not None:  # the answers C took, while the weights are the old ones
                svc.ahead.catch_up(svc.scheduler, svc.backends)
            for w, b in zip(weights, svc.backends, strict=True):
                if w != b.weight:
                    state = state_name(b, svc.health, now)
                    changes.append(f"{svc.name}/{b.name}: weight {b.weight} -> {w} ({state})")
                    b.weight = w
            svc.scheduler.update(svc.backends)
            if schedule:
                self._schedule_ahead(svc)
        if schedule:
            changes += self._let_go()
        return changes

    def _let_go(self) -> list[str]:
        """Removed backends and services whose last flow has ended leave the listing, and
        their numbers go to the next new ones. Only once the events are applied (no flow
        refers to them) and every live service's period or table is written into C (none
        names them: a period written before the reload that removed a backend still does).
        Returns what went, for the log."""
        changes = []
        for svc in (*self.services, *self.retired_services):
            if any(b.active + b.inactive == 0 for b in svc.retired):
                for b in svc.retired:
                    if b.active + b.inactive == 0:
                        changes.append(f"{svc.name}/{b.name}: removed, its last flow ended")
                        number = self.table.backends.get(b)
                        if number is not None and id(b) in self._endpoints:
                            # C no longer names its queue, which _sweep may drop
                            lib.pks_table_set_endpoint(self.table.tab, number, lib.PKS_NONE)
                        self.table.backends.forget(b)
                        self._endpoints.pop(id(b), None)  # (ids of dead objects are reused)
                        self._unused.add(b.endpoint)
                svc.retired = [b for b in svc.retired if b.active + b.inactive]
        for svc in self.retired_services:
            if not svc.retired:
                self.table.services.forget(svc)
        self.retired_services = [s for s in self.retired_services if s.retired]
        return changes

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

    # ------------------------------------------------------------------ tracing
    def subscribe(self, sub: Subscription) -> None:
        """Start recording packets for `sub`; the traced path replaces process()."""
        self.subscriptions.append(sub)
        self.process = self._process_traced  # type: ignore[method-assign]
        tab = self.table.tab
        tab.open_on = 0  # every SYN through Python, so that its decision is recorded
        tab.all_events = 1  # and every state change C makes is told

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self.subscriptions:
            self.subscriptions.remove(sub)
        if not self.subscriptions:
            del self.process  # back to the class's untraced method
            self.table.tab.open_on = 1
            self.table.tab.all_events = 0

    def _process_traced(self, length: int, now: float) -> bool:
        hdr = self._hdr  # the trace shows IP packets, without the virtio_net_hdr
        before = bytes(self.buf[hdr:length])
        fast = self.fast
        self.last_transition = None
        forward = Switch.process(self, length, now)
        meta = self.meta
        tab = self.table.tab
        flow: tuple[str, str, str] | None = None
        if meta.slot >= 0 and tab.flows[meta.slot].used:
            f, k = self.table.flow(meta.slot), tab.flows[meta.slot].key[0]
            client: tuple[bytes, int] | None = f.client
            flow = (f"{packet.ip_str(k.saddr)}:{k.sport}", f.service.name, f.backend.name)
        elif meta.err == 0:
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

    # ------------------------------------------------------------------ reading
    def flow_view(self, flow: Flow, now: float) -> dict[str, Any]:
        """One flow as the control API and `pktswitch flows` show it."""
        nf = self.table.native(flow)
        k0, k1 = nf.key[0], nf.key[1]
        snat = None
        if flow.snat is not None:
            snat = f"{self.snat[flow.snat[0]]}:{flow.snat[1]}"
        return {
            "protocol": "tcp",
            "service": flow.service.name,
            "client": f"{packet.ip_str(k0.saddr)}:{k0.sport}",
            "vip": f"{packet.ip_str(k0.daddr)}:{k0.dport}",
            "snat": snat,
            "backend": flow.backend.name,
            "backend_address": f"{packet.ip_str(k1.saddr)}:{k1.sport}",
            "state": flow.state.name,
            "timeout": flow.timeout,
            "expires_in": round(max(0.0, nf.last_seen + flow.timeout - now), 3),
            "age": round(now - flow.created, 3),
            "packets_in": nf.pkts[0],
            "bytes_in": nf.bytes[0],
            "packets_out": nf.pkts[1],
            "bytes_out": nf.bytes[1],
            "reason": flow.reason,
        }

    def flows(self, now: float) -> list[dict[str, Any]]:
        """Every flow as flow_view() shows it, oldest first."""
        return [self.flow_view(f, now) for f in sorted(self.table, key=lambda f: f.created)]

    def backends(self, now: float) -> list[dict[str, Any]]:
        """Every backend of every service with its live counters."""
        live: dict[int, list[int]] = {}
        for f in self.table:
            _, bin_, _, bout = self.table.counters(f)
            acc = live.setdefault(id(f.backend), [0, 0])
            acc[0] += bin_
            acc[1] += bout
        rows = []
        for svc in (*self.services, *self.retired_services):
            for b in (*svc.backends, *svc.retired):
                lb = live.get(id(b), [0, 0])
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
                        "bytes_in": b.closed_bytes[0] + lb[0],
                        "bytes_out": b.closed_bytes[1] + lb[1],
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
            "flows_expired": dict(self.flows_expired),
            "flows_reused": self.flows_reused,
            "flows_reset": self.flows_reset,
            "flows_evicted": self.flows_evicted,
            "icmp_echo_replies": self.icmp_echo_replies,
            "icmp_errors_translated": {
                "to_backend": self.icmp_errors[0],
                "to_client": self.icmp_errors[1],
            },
            "acl_denied": {s.name: s.denied for s in self.services if s.acl is not None},
            "snat_exhausted": self.pool.exhausted,
            "snat_early_reuse": self.pool.early_reuse,
            "snat_in_use": {a: self.pool.in_use_by_addr[i] for i, a in enumerate(self.snat)},
            "snat_queues": self.pool.queues,
            "tracing": len(self.subscriptions),
        }
