"""Applying what C did (native/pks_flow.h, pks_event): flows opened and ended, SYN-ACKs and
first responses timed, backends refusing a SYN. Python applies them, in order, before it
decides on any packet. They carry only what Python alone needs (reasons, response times,
passive health, its counters of flows opened and ended): C counts each backend's flows
itself, and Python reads those counts through (core/flows.py)."""

from __future__ import annotations

import struct

from pktswitch._native import ffi, lib
from pktswitch.core.base import RATE_WINDOW, SwitchBase
from pktswitch.core.flows import STATES
from pktswitch.sched.pool import BackendState

EVENT_BATCH = 256  # events moved out of the native ring per call (the switch's buffer)
_CODES = {"uint8_t": "B", "uint16_t": "H", "uint32_t": "I", "uint64_t": "Q", "double": "d"}


def layout(ctype: str) -> tuple[struct.Struct, tuple[str, ...]]:
    """A cffi struct as the struct module reads it, from cffi's own offsets and field types
    (the cdef is the one definition of the record), and its field names in that order (an
    array field is that many values, a union those of its first member, which the reader
    turns into the member its kind names: pks_event_data, whose first member is its words)."""
    fmt, names, at = ["<"], [], 0
    for name, f in ffi.typeof(ctype).fields:
        kind, count = f.type, 1
        if kind.kind == "array":
            kind, count = kind.item, kind.length
        if kind.kind == "union":  # read as its first member (a union of 64-bit words)
            first = kind.fields[0][1].type
            kind, count = (first.item, first.length) if first.kind == "array" else (first, 1)
        fmt.append(f"{f.offset - at}x" * (f.offset > at) + f"{count}{_CODES[kind.cname]}")
        names += [name] if count == 1 else [f"{name}[{i}]" for i in range(count)]
        at = f.offset + ffi.sizeof(f.type)
    fmt.append(f"{ffi.sizeof(ctype) - at}x" * (ffi.sizeof(ctype) > at))
    return struct.Struct("".join(fmt)), tuple(names)


EVENT, EVENT_FIELDS = layout("pks_event")
# the order take_events unpacks them in
_UNPACKED = (
    "slot kind from to dir gen backend reason service t value data[0] data[1] data[2] data[3]"
)
if tuple(_UNPACKED.split()) != EVENT_FIELDS:
    raise RuntimeError(f"pks_event's fields are {EVENT_FIELDS}; take_events reads {_UNPACKED}")
EV_SYNACK, EV_REFUSED = lib.PKS_EV_SYNACK, lib.PKS_EV_REFUSED
EV_OPEN, EV_END, EV_EVICT = lib.PKS_EV_OPEN, lib.PKS_EV_END, lib.PKS_EV_EVICT
EV_RECLAIM, EV_ANSWERED = lib.PKS_EV_RECLAIM, lib.PKS_EV_ANSWERED
# what a backend's refusal was, by its service's protocol (PKS_EV_REFUSED)
REFUSED_BY = {"tcp": "RST in answer to a SYN", "udp": "ICMP port unreachable"}
NO_REASON = lib.PKS_NONE  # a flow C opened, before its OPEN event


class Events(SwitchBase):
    def take_events(self) -> None:
        """Apply what C did by itself (native/pks_flow.h, pks_event): flows opened and ended,
        SYN-ACKs and first responses timed, refusals. Called
        before Python decides on any packet, and after each batch, so Python's view of every
        flow is current. The events are read as one buffer of packed records (quicker than a
        cffi attribute per field)."""
        tab, table = self.table.tab, self.table
        backends = table.backends
        batch = len(self._events)
        while True:
            n = lib.pks_events_take(tab, self._events, batch)
            # each event carries what Python needs of its flow: C may have ended the flow
            # since (a SYN reusing its client port), and opened another in its slot
            for (
                slot,
                kind,
                was,
                to,
                _dir,
                gen,
                backend,
                reason,
                service,
                t,
                value,
                d0,
                d1,
                d2,
                d3,
            ) in EVENT.iter_unpack(self._event_bytes[: n * EVENT.size]):
                if kind == EV_OPEN:
                    self._opened(slot, gen, backend, reason, service, t, value, (d0, d1, d2, d3))
                elif kind in (EV_END, EV_EVICT, EV_RECLAIM, EV_ANSWERED):
                    self._ended(kind, was, reason)
                elif kind == EV_SYNACK:  # (its flow may have ended since: the event says all)
                    self._answered(backend, to, value, t)
                elif kind == EV_REFUSED:
                    svc = table.services[service]
                    if svc.health.passive:
                        why = REFUSED_BY[svc.protocol]
                        self._passive.append((svc, backends[backend], why))
                else:
                    self.sample(backends[backend], "data", value, t)
            if n < batch:
                break

    def _opened(
        self,
        slot: int,
        gen: int,
        backend: int,
        reason: int,
        service: int,
        t: float,
        value: float,
        data: tuple[int, int, int, int],
    ) -> None:
        """C opened a flow for a client's SYN: the flow's reason, from what the event tells
        of the pick (core/ahead.py, told: for lc, wlc and lrt the counts C picked on)."""
        table = self.table
        b, svc = table.backends[backend], table.services[service]
        if reason != NO_REASON:  # the member's own (rr), held by the program
            table.reasons.hold_again(reason)
        else:
            c = table.tab.flows[slot]
            if c.gen == gen and c.used:  # (one C ended already has no reason to write)
                text = svc.ahead.reason(svc.scheduler, svc.backends, c, b, value, data)  # type: ignore[union-attr]
                c.reason = table.reasons.hold(text)
        self._created(t)
        if svc.health.passive and svc.protocol == "tcp":  # (a UDP flow has no SYN-ACK)
            c = table.tab.flows[slot]
            if c.gen == gen and c.used:
                self._watch_syn(t + svc.health.syn_timeout, slot, gen)

    def _watch_syn(self, due: float, slot: int, gen: int) -> None:
        """Watch a new flow for its SYN-ACK until `due` (passive health). The watch holds no
        more entries than the table holds half-open flows: when full, the entries of flows no
        longer half-open go first, then (a flood) the oldest."""
        watch, limit = self._syn_watch, self.table.max_half_open
        if len(watch) >= limit:
            while len(watch) and not self.half_open(*watch.first()):
                watch.popleft()
            while len(watch) >= limit:
                watch.popleft()
        watch.append(due, slot, gen)

    def sample(self, b: BackendState, kind: str, seconds: float, now: float) -> None:
        """A response-time sample of backend b (sched/pool.py), and its smoothed time into
        C, for lrt (probes: control/probes.py)."""
        b.add_sample(kind, seconds, now)
        number = self.table.backends.get(b)
        if number is not None and b.rt is not None:
            lib.pks_backend_rt(self.table.tab, number, b.rt)

    def _ended(self, kind: int, was: int, reason: int) -> None:
        """C ended a flow (and freed its SNAT pair) to open a new one: in TIME_WAIT or CLOSE,
        for its client's reused port (END); the oldest half-open one, to make room (EVICT);
        or one whose SNAT pair the new flow takes (RECLAIM); or a one-packet flow whose every
        datagram was answered (ANSWERED). What _expire counts, from the event."""
        if kind == EV_ANSWERED:
            self.flows_answered += 1
        elif kind == EV_EVICT:
            self.flows_evicted += 1
        elif kind == EV_RECLAIM:
            self.flows_reclaimed[STATES[was].name] += 1
        else:
            self.flows_reused += 1
            self.flows_expired[STATES[was].name] += 1
        self.table.ended(reason)

    def _answered(self, backend: int, syns: int, handshake: float, now: float) -> None:
        """A backend's first SYN-ACK on a flow: it answers, and the handshake time."""
        b = self.table.backends[backend]
        if now >= b.ejected_until:
            b.ejections = 0  # it answers again: the next ejection is short
        if syns == 1:  # Karn: a retransmitted SYN makes the sample ambiguous
            self.sample(b, "syn", handshake, now)

    def _created(self, now: float) -> None:
        self.flows_created += 1
        second = int(now)
        per_s = self._created_per_s
        per_s[second] = per_s.get(second, 0) + 1
        if len(per_s) > RATE_WINDOW + 1:
            for old in [k for k in per_s if k < second - RATE_WINDOW]:
                del per_s[old]
