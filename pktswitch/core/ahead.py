"""Scheduling ahead: a round robin's answers for one period, written into the C table, so that
C opens the service's new flows by itself (native/pks_service.h, "New flows in C"); or what C needs
to run the scheduler itself (a hashing scheduler's table, a least-loaded one's backends).

rr and smooth wrr never look at the packet: their next answers depend only on their own state
and the weights, and repeat with a period (rr: the backends with weight > 0; wrr: the sum of
the weights, after which every backend's `current` is back where it was). So Python runs a
copy of the scheduler for one period - the same code that decides when Python schedules, which
stays the reference - and C walks the answers with a cursor. Every new flow of such a service
takes the answer at that cursor, whether C opens it or Python does (a traced SYN, or one C
left to Python), so there is one sequence. Before the weights or the set change, the Python
scheduler is moved on by the answers taken since the period was written (it is then where C
is), and the period is written again from there.

The hashing schedulers (iphash, maglev) have no period but a table: its members and slots
are written into C instead, and C hashes the client to the slot as sched/hashing.py does
(keyed BLAKE2b); the same table answers Python's picks, so both agree by construction.
A service's access list goes with it (write_acl): C opens flows for the clients it permits
and leaves the others' SYNs to Python, which refuses and counts them.

lc and wlc read the backends' live counts: C counts every flow per backend itself (pks_load:
established, and in any other state), so only the backends and their weights are written,
and C picks as sched/least.py's overhead does. Python writes the reason when it applies the
flow's OPEN event, from its own counts, which are then C's at the pick (every change to them
before it is an event applied before that one). lrt, which reads response times, stays with
Python.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

from pktswitch._native import ffi, lib
from pktswitch.core.acl import CompiledAcl
from pktswitch.core.cdata import CData
from pktswitch.sched.base import Picked, Scheduler
from pktswitch.sched.pool import BackendState

if TYPE_CHECKING:
    from pktswitch.core.flows import FlowTable

PERIOD_MAX = lib.PKS_PERIOD_MAX
# a least-loaded scheduler's way of comparing loads (its least_loaded), as C names it
LEAST = {"count": lib.PKS_LEAST_COUNT, "per weight": lib.PKS_LEAST_PER_WEIGHT}
ANY_CLIENT = bytes(4)  # rr and wrr ignore the client: any address does


def period(scheduler: Scheduler, backends: Sequence[BackendState]) -> int:
    """How many answers make the scheduler's period now; 0 when it has none (it looks at the
    client or at live counts) or no backend takes new flows."""
    of: Callable[[Sequence[BackendState]], int] | None = getattr(scheduler, "period", None)
    return 0 if of is None else of(backends)


class Ahead:
    """One service's scheduler as C holds it, at the service's Python number `sid`: a
    period of answers (rr, wrr), a hashing scheduler's members and slots (iphash, maglev),
    or a least-loaded one's backends and weights (lc, wlc)."""

    __slots__ = ("_base", "_port", "_reasons", "_table", "_vip", "answers", "sid")

    def __init__(self, table: FlowTable, sid: int, vip: int, port: int) -> None:
        self._table = table  # core/flows.py's FlowTable
        self.sid = sid
        self.answers: list[Picked] = []
        self._reasons: list[int] = []  # the reason numbers the period holds, one each
        self._base = 0  # the answers taken when the Python scheduler was last moved on
        self._vip, self._port = vip, port  # where the service is (host order)

    def write(
        self,
        scheduler: Scheduler,
        backends: Sequence[BackendState],
        known: Callable[[BackendState], object] | None,
    ) -> bool:
        """Hand the scheduler to C: a hashing one's table, a least-loaded one's backends, or
        the answers of a copy run for one period; with no backend taking flows, a program
        that refuses every SYN (no_backend). False (and the service's flows are Python's to
        schedule, C still checking each SYN, the access list and the room) when it has none
        of these, more than PERIOD_MAX answers or members, or C refuses it. `known` is
        called for each backend C may send to (full NAT: C must know its SNAT queue)."""
        vip, port = self._vip, self._port
        table_for = getattr(scheduler, "table_for", None)
        if table_for is not None:
            return self._write_table(table_for(backends), scheduler, vip, port, known)
        least: str | None = getattr(scheduler, "least_loaded", None)
        if least is not None:
            return self._write_least(backends, LEAST[least], vip, port, known)
        if getattr(scheduler, "period", None) is None:
            return self.to_python()
        n = period(scheduler, backends)
        if n == 0:
            return self.empty()
        if n > PERIOD_MAX:
            return self.to_python()
        twin = copy.copy(scheduler)  # rr and wrr replace their state, never change it in place
        period_picks = [twin.pick(backends, ANY_CLIENT, 0) for _ in range(n)]
        if None in period_picks:
            return self.empty()
        answers = cast("list[Picked]", period_picks)  # (no pick is None: checked)
        table = self._table
        reasons = table.reasons
        held = {text: reasons.hold(text) for text in dict.fromkeys(r for _, r in answers)}
        picks = self._picks(
            [b for b, _ in answers],
            [held[r] for _, r in answers],
            known,
        )
        if lib.pks_service_set(table.tab, self.sid, vip, port, picks, n, 0) != 0:
            for r in held.values():
                reasons.release(r)
            return self.to_python()
        self._release()
        self.answers = answers
        self._reasons = list(held.values())
        self._base = 0
        return True

    def _write_table(
        self,
        table: tuple[list[BackendState], list[int]],
        scheduler: Scheduler,
        vip: int,
        port: int,
        known: Callable[[BackendState], object] | None,
    ) -> bool:
        """A hashing scheduler's members and slot table into C (it has no period): C hashes
        the client to the slot itself; the reason, which names the client, is written by
        the switch when it applies the flow's OPEN event."""
        members, slots = table
        if not members:
            return self.empty()
        if len(members) > PERIOD_MAX:
            return self.to_python()
        picks = self._picks(members, [lib.PKS_NONE] * len(members), known)
        cslots = ffi.new("uint32_t[]", [lib.PKS_NONE if i < 0 else i for i in slots])
        with_port = int(getattr(scheduler, "with_port", False))
        tab = self._table.tab
        rc = lib.pks_service_hash(tab, self.sid, vip, port, picks, len(members), cslots,
                                  len(slots), with_port)  # fmt: skip
        return self._runs_in_c(rc)

    def _write_least(
        self,
        backends: Sequence[BackendState],
        how: int,
        vip: int,
        port: int,
        known: Callable[[BackendState], object] | None,
    ) -> bool:
        """A least-loaded scheduler's backends and weights into C, which picks by the flows
        it counts (`how`: by count, lc; per weight, wlc); the reason is written by the
        switch when it applies the flow's OPEN event."""
        if not any(b.weight > 0 for b in backends):
            return self.empty()
        if len(backends) > PERIOD_MAX:
            return self.to_python()
        picks = self._picks(list(backends), [lib.PKS_NONE] * len(backends), known)
        rc = lib.pks_service_least(self._table.tab, self.sid, vip, port, picks, len(backends), how)
        return self._runs_in_c(rc)

    def _runs_in_c(self, rc: int) -> bool:
        """After C was given a scheduler it runs itself (hashing, least-loaded: `rc` its
        answer): no answers or reasons are held for it; C refused it (rc != 0): Python's."""
        self._release()
        self.answers = []
        if rc != 0:
            return self.to_python()
        return True

    def _picks(
        self,
        backends: list[BackendState],
        reasons: list[int],
        known: Callable[[BackendState], object] | None,
    ) -> CData:
        """The backends (with their reason numbers) as C's pks_pick array."""
        picks = ffi.new("pks_pick[]", len(backends))
        for p, b, reason in zip(picks, backends, reasons, strict=True):
            p.backend = self._table.backends.number(b)
            p.reason = reason
            if known is not None:
                known(b)
            p.addr = b.ip_int
            p.port = b.port
            p.weight = b.weight
        return picks

    def write_acl(self, acl: CompiledAcl | None) -> bool:
        """The service's access list into C, after write() (None: every client may connect).
        False, and the service is Python's (which then checks the list), when C refuses it
        (too long)."""
        allow, deny = (acl.allow, acl.deny) if acl is not None else ((), ())
        flat = ffi.new("uint32_t[]", [x for prefix in (*allow, *deny) for x in prefix] or 1)
        if lib.pks_service_acl(self._table.tab, self.sid, flat, len(allow), len(deny)) != 0:
            self.to_python()
            return False
        return True

    def _program(self, prog: int) -> None:
        if lib.pks_service_prog(self._table.tab, self.sid, self._vip, self._port, prog) != 0:
            raise RuntimeError(f"C has no room for service number {self.sid}")
        self._release()
        self.answers = []

    def to_python(self) -> bool:
        """The service's flows are Python's to schedule (C checks each SYN, the access list
        and the room first, and leaves the rest to Python, counted as python_schedules)."""
        self._program(lib.PKS_PROG_PYTHON)
        return False

    def empty(self) -> bool:
        """No backend takes the service's new flows: C drops their SYNs (no_backend)."""
        self._program(lib.PKS_PROG_EMPTY)
        return True

    def forget(self) -> None:
        """The service is gone (a reload removed it): a SYN to its VIP and port is no
        service's."""
        lib.pks_service_set(self._table.tab, self.sid, 0, 0, ffi.NULL, 0, 0)
        self._release()
        self.answers = []

    def _release(self) -> None:
        for r in self._reasons:
            self._table.reasons.release(r)
        self._reasons = []

    def cursor(self) -> int:
        """The answer the next flow gets (the number of answers taken, modulo the period)."""
        return max(0, int(lib.pks_service_next(self._table.tab, self.sid, 0)))

    def pick(self) -> Picked:
        """The next answer, as C would take it (Python opens this flow)."""
        return self.answers[int(lib.pks_service_next(self._table.tab, self.sid, 1))]

    def peek(self) -> Picked:
        return self.answers[int(lib.pks_service_next(self._table.tab, self.sid, 0))]

    def catch_up(self, scheduler: Scheduler, backends: Sequence[BackendState]) -> None:
        """Move the Python scheduler on by the answers taken since the last call (or the
        period's writing), before anything it depends on changes: after that it could not
        replay them. Its state after k answers depends only on the last of them (rr) or on
        k modulo the period (wrr), so d answers are replayed as d when d is below the
        period n, else as n + d % n."""
        if self.answers:
            taken = int(lib.pks_service_taken(self._table.tab, self.sid))
            n, d = len(self.answers), taken - self._base
            for _ in range(d if d < n else n + d % n):
                scheduler.pick(backends, ANY_CLIENT, 0)
            self._base = taken
