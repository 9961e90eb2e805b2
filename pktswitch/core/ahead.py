"""A service's scheduler compiled into the program C runs (native/pks_service.h, "New flows
in C"): C opens every new flow of the service itself, and Python never picks for one.

Each scheduler says which program it is (sched/base.py): rr and wrr with their state (rr's
turn, wrr's currents), iphash and maglev with their table, lc, wlc and lrt with nothing but
the members (C picks by the flows it counts, and lrt by the response times written into C).
The members are every backend of the service, in order, with its weight now. C owns the
state from the writing on and moves it with every flow it opens; before the weights or the
set change, and before a peek (`pktswitch which`), the switch reads it back into the Python
scheduler (sync), which then is exactly where C is.

The flow's reason is written when the switch applies its OPEN event, by the scheduler's
reason_for, from what C tells of the pick (sched/base.py, Told): rr's member, wrr's current
and total, the client's slot, lc's, wlc's and lrt's runner-up with both one's flows (and
for lrt their response times) at the pick. A service's access list goes with it
(write_acl).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

from pktswitch._native import ffi, lib
from pktswitch.core import packet
from pktswitch.core.acl import CompiledAcl
from pktswitch.core.cdata import CData
from pktswitch.core.limits import ClientLimits
from pktswitch.sched.base import Hashed, Scheduler, Stateful, Told
from pktswitch.sched.pool import BackendState

if TYPE_CHECKING:
    from pktswitch.core.flows import FlowTable

MEMBERS_MAX = lib.PKS_MEMBERS_MAX
PROGRAMS = {
    "rr": lib.PKS_PROG_RR,
    "wrr": lib.PKS_PROG_WRR,
    "hash": lib.PKS_PROG_HASH,
    "lc": lib.PKS_PROG_LC,
    "wlc": lib.PKS_PROG_WLC,
    "lrt": lib.PKS_PROG_LRT,
}
# pks_event_data: its words, and as lc's, wlc's and lrt's member
WORDS, LEAST = struct.Struct("<QQQQ"), struct.Struct("<IIIIdd")
_DATA = dict(ffi.typeof("pks_event_data").fields)
if (WORDS.size, LEAST.size) != (ffi.sizeof("pks_event_data"), ffi.sizeof(_DATA["least"].type)):
    raise RuntimeError("pks_event_data's members are not what core/ahead.py reads")
STATEFUL = {"rr", "wrr"}  # the programs whose state C moves on and sync reads back


class Ahead:
    """One service's program in C, at the service's Python number `sid`."""

    __slots__ = ("_held", "_port", "_state", "_table", "_texts", "_vip", "program", "sid")

    def __init__(self, table: FlowTable, sid: int, vip: int, port: int) -> None:
        self._table = table  # core/flows.py's FlowTable
        self.sid = sid
        self._vip, self._port = vip, port  # where the service is (host order)
        self.program = ""  # the scheduler's program as written ("": none, or empty)
        self._state = ffi.new("int64_t[]", 1)
        # wrr's reasons name neither the client nor counts: one text per (backend, current,
        # total),
        # kept for the program's life
        self._texts: dict[tuple[BackendState, int, int], str] = {}
        # rr's name only the member: each member's reason, held for the program's life, goes
        # with it into C, which gives it to the flow (pks_pick.reason)
        self._held: list[int] = []

    def write(
        self,
        scheduler: Scheduler,
        backends: Sequence[BackendState],
        known: Callable[[BackendState], object] | None,
    ) -> None:
        """Compile the scheduler into C's program for the service (with no backend taking
        flows: a program that refuses every SYN, no_backend). `known` is called for each
        backend C may send to (full NAT: C must know its SNAT queue). Raises ValueError
        when C refuses it (too many backends, no memory)."""
        program = scheduler.program
        if program not in PROGRAMS:
            raise ValueError(f"scheduler {scheduler.name!r} has no program C runs")
        if not any(b.weight > 0 for b in backends):
            return self._run(scheduler, lib.PKS_PROG_EMPTY, "", [], None, [])
        if program == "hash":
            hashed = cast(Hashed, scheduler)
            members, slots = hashed.table_for(backends)
            cslots = ffi.new("uint32_t[]", [lib.PKS_NONE if i < 0 else i for i in slots])
            picks = self._picks(members, known)
            with_port = int(hashed.with_port)
            rc = lib.pks_service_hash(self._table.tab, self.sid, self._vip, self._port, picks,
                                      len(members), cslots, len(slots), with_port)  # fmt: skip
            if rc == 0:
                self._release()
            return self._done(rc, "hash", len(members))
        state = cast(Stateful, scheduler).state(backends) if program in STATEFUL else []
        self._run(scheduler, PROGRAMS[program], program, list(backends), known, state)

    def _run(
        self,
        scheduler: Scheduler,
        prog: int,
        program: str,
        backends: list[BackendState],
        known: Callable[[BackendState], object] | None,
        state: list[int],
    ) -> None:
        picks = self._picks(backends, known) if backends else ffi.NULL
        held = []
        if program == "rr":  # each member's reason, as rr.reason_for words it
            reasons = self._table.reasons
            rr = scheduler
            for j, (p, b) in enumerate(zip(picks, backends, strict=True)):
                if b.weight > 0:
                    p.reason = reasons.hold(rr.reason_for(backends, b"", 0, Told(j), b))
                    held.append(p.reason)
        cstate = ffi.new("int64_t[]", state) if state else ffi.NULL
        rc = lib.pks_service_run(self._table.tab, self.sid, self._vip, self._port, prog, picks,
                                 len(backends), cstate, len(state))  # fmt: skip
        if rc != 0:
            for r in held:
                self._table.reasons.release(r)
        else:
            self._release()
            self._held = held
        self._done(rc, program, len(backends))

    def _done(self, rc: int, program: str, n: int) -> None:
        if rc != 0:
            raise ValueError(
                f"C cannot run the service's program ({n} backends; at most {MEMBERS_MAX})"
            )
        self.program = program
        self._texts.clear()
        if program in STATEFUL and len(self._state) < n:
            self._state = ffi.new("int64_t[]", n)

    def _picks(
        self, backends: Sequence[BackendState], known: Callable[[BackendState], object] | None
    ) -> CData:
        """The backends as C's pks_pick array (and their response times into C: a backend
        number may have been another backend's)."""
        picks = ffi.new("pks_pick[]", len(backends))
        number, tab = self._table.backends.number, self._table.tab
        for p, b in zip(picks, backends, strict=True):
            p.backend = n = number(b)
            p.reason = lib.PKS_NONE
            lib.pks_backend_rt(tab, n, -1.0 if b.rt is None else b.rt)
            if known is not None:
                known(b)
            p.addr = b.ip_int
            p.port = b.port
            p.weight = b.weight
        return picks

    def write_acl(self, acl: CompiledAcl | None) -> None:
        """The service's access list into C, after write() (None: every client may connect)."""
        allow, deny = (acl.allow, acl.deny) if acl is not None else ((), ())
        flat = ffi.new("uint32_t[]", [x for prefix in (*allow, *deny) for x in prefix] or 1)
        if lib.pks_service_acl(self._table.tab, self.sid, flat, len(allow), len(deny)) != 0:
            raise ValueError(f"C cannot hold an access list of {len(allow) + len(deny)} prefixes")

    def write_transport(self, protocol: str, udp_timeout: float, one_packet: bool) -> None:
        """The service's protocol into C, after write(), a UDP flow's idle timeout, and
        whether each datagram is scheduled on its own."""
        proto = packet.PROTOCOL_NUMBERS[protocol]
        tab = self._table.tab
        if lib.pks_service_transport(tab, self.sid, proto, udp_timeout, one_packet) != 0:
            raise ValueError(
                f"C cannot run a {protocol} service with udp_timeout {udp_timeout}"
                f"{' one-packet' if one_packet else ''}"
            )

    def write_limits(self, limits: ClientLimits | None) -> None:
        """The service's per-client limits into C, after write() (None: none)."""
        if limits is None:
            rc = lib.pks_service_limits(self._table.tab, self.sid, 0, 0, 0.0, 1.0)
        else:
            rc = lib.pks_service_limits(
                self._table.tab,
                self.sid,
                limits.prefix,
                limits.max_flows,
                limits.new_flows_per_second,
                limits.burst_or_default,
            )
        if rc != 0:
            raise ValueError(f"C cannot hold the per-client limits {limits}")

    def forget(self) -> None:
        """The service is gone (a reload removed it): a SYN to its VIP and port is no
        service's."""
        lib.pks_service_forget(self._table.tab, self.sid)
        self._release()
        self.program = ""

    def _release(self) -> None:
        """Let go of the reasons the program held (flows that hold them keep them)."""
        for r in self._held:
            self._table.reasons.release(r)
        self._held = []

    def sync(self, scheduler: Scheduler, backends: Sequence[BackendState]) -> None:
        """Read the program's state, as C moved it on, back into the scheduler."""
        if self.program in STATEFUL:
            n = lib.pks_service_state(self._table.tab, self.sid, self._state, len(self._state))
            if n < 0:
                raise RuntimeError(f"C has no program for service number {self.sid}")
            cast(Stateful, scheduler).resume(backends, list(self._state[0:n]))

    def reason(
        self,
        scheduler: Scheduler,
        backends: Sequence[BackendState],
        flow: CData,
        b: BackendState,
        value: float,
        data: tuple[int, int, int, int],
    ) -> str:
        """The reason of the flow C opened (its C record `flow`, on b), from its OPEN event
        (pks_event_data's words in `data`)."""
        if self.program == "wrr":
            key = (b, int(value), _signed(data[0]))
            text = self._texts.get(key)
            if text is None:
                told = Told(key[1], total=key[2])
                text = self._texts[key] = scheduler.reason_for(backends, b"", 0, told, b)
            return text
        k = flow.key[0]  # the client's side: hashed, and named by the hash schedulers
        client = bytes(ffi.buffer(k.saddr, 4))
        return scheduler.reason_for(backends, client, k.sport, self.told(value, data), b)

    def told(self, value: float, data: tuple[int, int, int, int]) -> Told:
        """What the OPEN event of a flow C opened for this service says of its pick."""
        if self.program == "wrr":
            return Told(int(value), total=_signed(data[0]))
        if self.program in ("lc", "wlc", "lrt"):  # pks_event_data.least: 4 counts, 2 rts
            a0, a1, i0, i1, rt0, rt1 = LEAST.unpack(WORDS.pack(*data))
            other = -1 if int(value) == lib.PKS_NONE else int(value)
            rts = (_rt(rt0), _rt(rt1)) if self.program == "lrt" else (None, None)
            return Told(other, active=(a0, a1), inactive=(i0, i1), rt=rts)
        return Told(int(value))


def _signed(word: int) -> int:
    """A 64-bit word as pks_event_data.total (int64_t) holds it."""
    return word - (1 << 64) if word >> 63 else word


def _rt(rt: float) -> float | None:
    return None if rt < 0 else rt
