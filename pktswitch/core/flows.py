"""The flow table: one entry per switched connection, found from either direction.

Every flow lives in the native table (native/), one slot each, and nowhere else: the two
keys (client side and backend side as they arrive; each direction is rewritten to the other's
key reversed), packet and byte counters, the time of the last packet, the TCP state and its
timeout, the timer, the half-open list, and Python's numbers for the flow's service, backend,
reason and SNAT pair. C finds a flow and counts every packet without Python, moves its state
through the grid of core/tcpstate.py, and counts each backend's flows wherever a flow's
state changes (pks_load: ESTABLISHED, other, ever opened), which lc, wlc and lrt pick by.
Those counts have one owner, C: a backend with a number reads C's record (BackendState.load
is it), so Python keeps no second copy in step. A Flow object is a view of a slot made on
demand, so a million flows cost no Python objects; C keeps the free slots (the flows it opens
take them), and this module the numbering of what flows refer to.

Idle expiry without scanning: every flow has at most one live entry in a heap of deadlines
(in C). When an entry comes due, the deadline is recomputed from the flow's real last-packet
time; a flow that saw traffic meanwhile is pushed back, one that did not is expired. A state
change that brings the deadline earlier pushes a new entry (the old one becomes stale and
is skipped when it surfaces, or dropped when stale entries outnumber live ones); a later one
keeps the old entry, which will come due early and be pushed back. So the work per call is
O((expired + pushed back) x log n), never a walk over the table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

from pktswitch._native import ffi, lib
from pktswitch.core.cdata import CData
from pktswitch.core.tcpstate import DEFAULT_TIMEOUTS, TRANSITIONS, Event, State, UdpState
from pktswitch.sched.base import ACTIVE_WEIGHT
from pktswitch.sched.pool import Load

if TYPE_CHECKING:
    from pktswitch.core.service import ServiceState
    from pktswitch.sched.pool import BackendState

# Size precedent: conntrack's nf_conntrack_max on a host with 4 GiB or more is 262144.
DEFAULT_MAX_FLOWS = 262144
# Half-open flows (SYN seen, handshake not finished) may fill at most this share of the table by
# default, so a SYN flood cannot crowd out established flows (IPVS's drop_entry defence drops
# SYN_RECV entries first for the same reason; Linux's tcp_max_syn_backlog bounds the same thing).
HALF_OPEN_SHARE = 4
EXPIRE_BATCH = 1024  # expired slots taken from C per call


class Flow:
    """One flow, as a view of its slot in the native table (nothing per flow is kept in
    Python). A view outlives its flow: `alive` tells whether the slot still holds the flow it
    was made for (the slot's gen counts the flows opened in it). Two views of one flow are
    equal."""

    __slots__ = ("_table", "gen", "slot")

    def __init__(self, table: FlowTable, slot: int) -> None:
        self._table = table
        self.slot = slot
        self.gen = table.tab.flows[slot].gen

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Flow) and (other.slot, other.gen) == (self.slot, self.gen)

    def __hash__(self) -> int:
        return hash((self.slot, self.gen))

    def __repr__(self) -> str:
        return f"Flow(slot={self.slot}, gen={self.gen})"

    @property
    def _c(self) -> CData:
        return self._table.tab.flows[self.slot]

    @property
    def alive(self) -> bool:
        c = self._c
        return bool(c.used) and c.gen == self.gen

    @property
    def service(self) -> ServiceState:  # the one it belongs to
        return self._table.services[self._c.service]

    @property
    def backend(self) -> BackendState:  # the one chosen
        return self._table.backends[self._c.backend]

    @property
    def reason(self) -> str:  # why that backend ("" until the switch has written it)
        return self._table.reason_of(self._c)

    @property
    def created(self) -> float:
        return float(self._c.created)

    @property
    def client(self) -> tuple[bytes, int]:  # the client's address and port
        k = self._c.key[0]
        return bytes(ffi.buffer(k.saddr, 4)), int(k.sport)

    @property
    def snat(self) -> tuple[int, int] | None:  # (SNAT address index, port) in full NAT
        c = self._c
        return (int(c.snat_addr), int(c.snat_port)) if c.has_snat else None

    @property
    def state(self) -> State | UdpState:
        return STATES[int(self._c.state)]

    @property
    def timeout(self) -> float:
        return timeout_of(self._c)

    @property
    def syns(self) -> int:  # SYNs seen from the client (retransmits spoil the handshake time)
        return int(self._c.syns)

    @syns.setter
    def syns(self, n: int) -> None:
        self._c.syns = min(n, 255)

    @property
    def synack_at(self) -> float:  # when the backend's first SYN-ACK was seen, -1: not yet
        return float(self._c.synack_at)

    @synack_at.setter
    def synack_at(self, t: float) -> None:
        self._c.synack_at = t


class CLoad:
    """A backend's flows as C counts them (pks_load at its number), read through: what
    BackendState.load is for a backend the switch has numbered. It indexes C's array at each
    read (the array moves when it grows) and keeps the table alive (a backend may outlive
    its switch)."""

    __slots__ = ("_n", "_tab")

    def __init__(self, tab: CData, n: int) -> None:
        self._tab, self._n = tab, n

    @property
    def active(self) -> int:
        return int(self._tab.bk_load[self._n].active)

    @property
    def inactive(self) -> int:
        return int(self._tab.bk_load[self._n].inactive)

    @property
    def total(self) -> int:
        return int(self._tab.bk_load[self._n].total)

    @property
    def bytes_in(self) -> int:
        return int(self._tab.bk_load[self._n].bytes[0])

    @property
    def bytes_out(self) -> int:
        return int(self._tab.bk_load[self._n].bytes[1])


# by value, quicker than State(n): the TCP states, then a UDP flow's
STATES: tuple[State | UdpState, ...] = (*State, *UdpState)
SYN_RECV = State.SYN_RECV


def timeout_of(c: CData) -> float:
    """A flow's idle timeout from its C record, kept as a C float: rounded back to what was
    configured."""
    return round(float(c.timeout), 6)


T = TypeVar("T")


class Registry(Generic[T]):
    """Numbers for the objects flows refer to (services, backends), as the native table
    stores them (32-bit; C keeps backend numbers below PKS_NUMBER_MAX). An object keeps its
    number, and stays referenced here, until the switch forgets it: a service or backend a
    reload removed, once its last flow has ended. Its number then goes to the next new
    object, so the numbers in use are those of the live objects only."""

    def __init__(
        self,
        numbered: Callable[[T, int], None] | None = None,
        forgotten: Callable[[T, int], None] | None = None,
    ) -> None:
        self._objs: list[T] = []
        self._ids: dict[int, int] = {}  # id(obj) -> number; _objs keeps obj alive
        self._free: list[int] = []  # numbers of forgotten objects
        # told of an object about to take a number (it may refuse by raising: nothing is
        # numbered then), and of one letting its number go
        self._numbered = numbered
        self._forgotten = forgotten

    def __getitem__(self, n: int) -> T:
        return self._objs[n]

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def capacity(self) -> int:
        """Numbers given so far, in use or free (those of forgotten objects hold None)."""
        return len(self._objs)

    def get(self, obj: T) -> int | None:
        """obj's number, None if it has none (without giving it one)."""
        return self._ids.get(id(obj))

    def number(self, obj: T) -> int:
        n = self._ids.get(id(obj))
        if n is None:
            n = self._free[-1] if self._free else len(self._objs)
            if self._numbered is not None:
                self._numbered(obj, n)
            if self._free:
                self._objs[self._free.pop()] = obj
            else:
                self._objs.append(obj)
            self._ids[id(obj)] = n
        return n

    def forget(self, obj: T) -> None:
        """Let go of obj (if it has a number): no flow and nothing in C may refer to its
        number any more, which the next new object may take."""
        n = self._ids.pop(id(obj), None)
        if n is not None:
            if self._forgotten is not None:
                self._forgotten(obj, n)
            self._objs[n] = None  # type: ignore[assignment]  # a free number holds no object
            self._free.append(n)


class Reasons:
    """The reasons flows were scheduled with, each text kept once while a flow uses it
    (counted), so a million flows of one scheduler hold a handful of strings; lc and wlc
    share few, for their reasons name the counts of the moment (nearly one text a flow)."""

    def __init__(self) -> None:
        self._texts: list[str | None] = []
        self._refs: list[int] = []
        self._ids: dict[str, int] = {}
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self._ids)

    def text(self, n: int) -> str:
        t = self._texts[n]
        assert t is not None
        return t

    def hold(self, text: str) -> int:
        n = self._ids.get(text)
        if n is None:
            if self._free:
                n = self._free.pop()
                self._texts[n] = text
                self._refs[n] = 0
            else:
                n = len(self._texts)
                self._texts.append(text)
                self._refs.append(0)
            self._ids[text] = n
        self._refs[n] += 1
        return n

    def hold_again(self, n: int) -> None:
        """One more flow uses reason n (C opened a flow with a reason Python holds)."""
        self._refs[n] += 1

    def release(self, n: int) -> None:
        self._refs[n] -= 1
        if self._refs[n] == 0:
            del self._ids[self._texts[n]]  # type: ignore[arg-type]
            self._texts[n] = None
            self._free.append(n)


def default_half_open(max_flows: int) -> int:
    return max(1, max_flows // HALF_OPEN_SHARE)


class FlowTable:
    def __init__(
        self,
        max_flows: int = DEFAULT_MAX_FLOWS,
        timeouts: dict[State, float] | None = None,
        seed: int | None = None,
        max_half_open: int | None = None,
    ) -> None:
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        tab = lib.pks_table_new(max_flows, seed)
        if tab == ffi.NULL:
            raise MemoryError(f"cannot allocate a flow table for {max_flows} flows")
        self.tab = ffi.gc(tab, lib.pks_table_free)
        # C moves flows through the same grid on FINs and ACKs (see native/pks_table.h)
        grid = bytes(TRANSITIONS[d][e][s] for d in (0, 1) for e in Event for s in State)
        if lib.pks_table_set_transitions(self.tab, grid, len(grid)) != 0:
            raise RuntimeError("the native table refused the TCP state grid")
        if (
            State.SYN_RECV != lib.PKS_S_SYN_RECV
            or len(State) != lib.PKS_STATES
            or UdpState.UDP != lib.PKS_S_UDP
        ):
            raise RuntimeError("native/pks_flow.h and tcpstate.State disagree on the states")
        if ACTIVE_WEIGHT != lib.PKS_ACTIVE_WEIGHT:
            raise RuntimeError("native/pks_service.h and sched/base.py weigh flows differently")
        self.max_flows = max_flows
        if max_half_open is None:
            max_half_open = default_half_open(max_flows)
        self.tab.max_half_open = max_half_open
        self.timeouts: dict[State, float] = {}
        self.set_timeouts(DEFAULT_TIMEOUTS if timeouts is None else timeouts)
        self.services: Registry[ServiceState] = Registry()
        # C counts each backend's flows, and a numbered backend reads them there
        self.backends: Registry[BackendState] = Registry(
            self._backend_numbered, self._backend_forgotten
        )
        self.reasons = Reasons()
        self._expired = ffi.new("uint32_t[]", EXPIRE_BATCH)
        self._scanned = ffi.new("uint32_t[]", EXPIRE_BATCH)  # (scan's, grown as asked)

    def __len__(self) -> int:
        return int(self.tab.count)

    def _backend_numbered(self, b: BackendState, number: int) -> None:
        """b takes a number (a new one, or one a backend let go of, with no flows): C counts
        its flows from its own total on, and has its response time, if any."""
        if lib.pks_table_set_backends(self.tab, number + 1) != 0:
            raise MemoryError(f"no memory to count the flows of {number + 1} backends")
        c = self.tab.bk_load[number]
        if c.active or c.inactive:
            raise RuntimeError(f"backend number {number} is given again with flows on it")
        c.total = b.load.total
        c.bytes = [b.load.bytes_in, b.load.bytes_out]
        c.rt = -1.0 if b.rt is None else b.rt
        b.load = CLoad(self.tab, number)

    def _backend_forgotten(self, b: BackendState, number: int) -> None:
        """b lets its number go (it has no flows): it keeps what C counted, in Python."""
        b.load = Load(0, 0, b.total, b.bytes_in, b.bytes_out)

    def load(self, backend_number: int) -> tuple[int, int]:
        """The backend's flows as C counts them: (ESTABLISHED, in any other state)."""
        if not 0 <= backend_number < self.tab.bk_load_cap:
            raise IndexError(f"backend number {backend_number} is not counted in C")
        c = self.tab.bk_load[backend_number]
        return c.active, c.inactive

    @property
    def max_half_open(self) -> int:
        """Half-open flows the table takes: a SYN that finds it reached makes room by
        evicting the oldest (C does, as it opens the new flow)."""
        return int(self.tab.max_half_open)

    @max_half_open.setter
    def max_half_open(self, n: int) -> None:
        self.tab.max_half_open = n

    def __iter__(self) -> Iterator[Flow]:
        """The flows, by slot (a snapshot taken in batches: flows may end meanwhile)."""
        start = 0
        while start < self.max_flows:
            found, start = self.scan(start, EXPIRE_BATCH)
            yield from found

    def scan(self, start: int, span: int) -> tuple[list[Flow], int]:
        """The flows in the `span` slots from `start` on, and where the next span starts."""
        if len(self._scanned) < span:
            self._scanned = ffi.new("uint32_t[]", span)
        out = self._scanned
        n = lib.pks_table_scan(self.tab, start, out, span)
        return [Flow(self, out[i]) for i in range(n)], start + span

    def set_timeouts(self, timeouts: dict[State, float]) -> None:
        """The idle timeout of each state; a flow takes its state's when it enters it."""
        self.timeouts.update(timeouts)
        values = [float(self.timeouts[s]) for s in State]
        if lib.pks_table_set_timeouts(self.tab, values, len(values)) != 0:
            raise ValueError(f"bad timeouts: {values}")

    def flow(self, slot: int) -> Flow:
        """The flow in a used slot (as pks_process reports it in meta.slot)."""
        return Flow(self, slot)

    def full(self) -> bool:
        return bool(self.tab.count >= self.max_flows)

    @property
    def half_open(self) -> int:
        """Flows in SYN_RECV (SYN seen, handshake not finished)."""
        return int(self.tab.ho.count)

    @property
    def half_open_peak(self) -> int:
        return int(self.tab.half_open_peak)

    def half_open_full(self) -> bool:
        return bool(self.tab.ho.count >= self.max_half_open)

    def oldest_half_open(self) -> Flow | None:
        slot = self.tab.ho.head
        return None if slot == lib.PKS_NONE else Flow(self, slot)

    # ---------------------------------------------------------------- membership
    def remove(self, flow: Flow) -> None:
        if not flow.alive:
            return  # ended already: its slot is free or another flow's
        reason = self.tab.flows[flow.slot].reason
        lib.pks_table_remove(self.tab, flow.slot)
        self.ended(reason)

    def ended(self, reason: int) -> None:
        """A flow is out of the C table (removed here, or ended by C to open another), which
        counted it off its backend: its reason goes."""
        if reason != lib.PKS_NONE:  # (a flow C ended before its OPEN was applied: no reason)
            self.reasons.release(reason)

    # ----------------------------------------------------------------- state
    def set_state(self, flow: Flow, state: State, now: float) -> None:
        """A state change Python decided: state, timeout, timer, the half-open list and the
        backend's counts, in C."""
        if lib.pks_flow_set_state(self.tab, flow.slot, state, now) != 0:
            raise MemoryError("no memory for a flow timer")

    # --------------------------------------------------------------- readings
    def last_seen(self, flow: Flow) -> float:
        return float(self.tab.flows[flow.slot].last_seen)

    def expires_at(self, flow: Flow) -> float:
        c = self.tab.flows[flow.slot]
        return float(c.last_seen + c.timeout)

    def counters(self, flow: Flow) -> tuple[int, int, int, int]:
        """(packets in, bytes in, packets out, bytes out); in = from the client."""
        f = self.tab.flows[flow.slot]
        return f.pkts[0], f.bytes[0], f.pkts[1], f.bytes[1]

    def native(self, flow: Flow) -> CData:
        return self.tab.flows[flow.slot]

    def reason_of(self, c: CData) -> str:
        """Why a flow (its C record) got its backend; "" until the switch has written it."""
        return "" if c.reason == lib.PKS_NONE else self.reasons.text(c.reason)

    # ----------------------------------------------------------------- expiry
    def next_due(self) -> float | None:
        due = lib.pks_next_due(self.tab)
        return None if due < 0 else due

    def due(self, now: float) -> Iterator[Flow]:
        """Yield the flows idle past their timeout at `now`; the caller removes them."""
        out = self._expired
        while True:
            n = lib.pks_expire(self.tab, now, out, EXPIRE_BATCH)
            for i in range(n):
                yield Flow(self, out[i])
            if n < EXPIRE_BATCH:
                return
