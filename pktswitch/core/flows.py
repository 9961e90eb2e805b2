"""The flow table: one entry per switched connection, found from either direction.

Storage is split where the work is. The native table (native/pks.c) holds, per slot, the two
keys (client side and backend side as they arrive), the two rewrites, packet and byte counters
and the time of the last packet; C finds a flow and counts every packet without Python. C also
moves a flow's state on FINs and ACKs, through the grid of core/tcpstate.py loaded into it, and
reports each move as an event that the switch applies here (set_state) before it decides on
any other packet. This module owns which slots are used, the state Python acts on (timeouts,
backend counts, the half-open set) and each flow's timer.

Idle expiry without scanning: every flow has at most one live entry in a heap of deadlines.
When an entry comes due, the deadline is recomputed from the flow's real last-packet time;
a flow that saw traffic meanwhile is pushed back, one that did not is expired. A state change
to a shorter timeout pushes a new entry (the old one becomes stale and is skipped when it
surfaces); a longer one keeps the old entry, which will come due early and be pushed back.
So the work per call is O((expired + pushed back) x log n), never a walk over the table.
"""

from __future__ import annotations

import heapq
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pktswitch._native import ffi, lib
from pktswitch.core.tcpstate import DEFAULT_TIMEOUTS, TRANSITIONS, Event, State

# Size precedent: conntrack's nf_conntrack_max on a host with 4 GiB or more is 262144.
DEFAULT_MAX_FLOWS = 262144
# Half-open flows (SYN seen, handshake not finished) may fill at most this share of the table by
# default, so a SYN flood cannot crowd out established flows (IPVS's drop_entry defence drops
# SYN_RECV entries first for the same reason; Linux's tcp_max_syn_backlog bounds the same thing).
HALF_OPEN_SHARE = 4
COMPACT_MIN = 1024  # stale timer entries tolerated before the heap is rebuilt without them


@dataclass(slots=True, eq=False)
class Flow:
    slot: int
    service: Any  # the Service it belongs to
    backend: Any  # the BackendState chosen
    reason: str  # why that backend
    created: float
    client: tuple[bytes, int]  # the client's address and port
    snat: tuple[int, int] | None = None  # (SNAT address index, port) in full NAT
    state: State = State.NONE
    timeout: float = 0.0
    timer_seq: int = -1  # sequence number of the flow's live heap entry
    timer_due: float = 0.0  # when that entry comes due
    syns: int = 0  # SYNs seen from the client (retransmits make the handshake time unusable)
    synack_at: float = -1.0  # when the backend's first SYN-ACK was seen


class TableFull(Exception):
    pass


def default_half_open(max_flows: int) -> int:
    return max(1, max_flows // HALF_OPEN_SHARE)


class KeyBusy(Exception):
    """One of the flow's two keys is already in the table (a tuple collision)."""


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
        # C moves flows through the same grid on FINs and ACKs (see native/pks.h)
        grid = bytes(TRANSITIONS[d][e][s] for d in (0, 1) for e in Event for s in State)
        if lib.pks_table_set_transitions(self.tab, grid, len(grid)) != 0:
            raise RuntimeError("the native table refused the TCP state grid")
        self.max_flows = max_flows
        if max_half_open is None:
            max_half_open = default_half_open(max_flows)
        self.max_half_open = max_half_open
        # the half-open flows (SYN_RECV), oldest first: the first to go when room is needed
        # (an OrderedDict: a plain dict finds its first key by skipping every key deleted
        # before it, which made each eviction of a SYN flood O(table) until the next resize)
        self.half_open: OrderedDict[Flow, None] = OrderedDict()
        self.half_open_peak = 0
        self.timeouts = dict(DEFAULT_TIMEOUTS if timeouts is None else timeouts)
        self.flows: list[Flow | None] = []  # by slot; grows to the high-water mark only
        self._free: list[int] = []  # slots freed below the high-water mark
        self._count = 0
        self._heap: list[tuple[float, int, Flow]] = []
        self._seq = 0
        self._stale = 0  # heap entries that no longer belong to a flow's live timer

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Flow]:
        return (f for f in self.flows if f is not None)

    def full(self) -> bool:
        return self._count >= self.max_flows

    def half_open_full(self) -> bool:
        return len(self.half_open) >= self.max_half_open

    def oldest_half_open(self) -> Flow | None:
        return next(iter(self.half_open), None)

    # ---------------------------------------------------------------- membership
    def open(
        self,
        buf: Any,
        meta: Any,
        to: tuple[int, int, int, int],
        now: float,
        flow_args: dict[str, Any],
    ) -> Flow:
        """Index a new flow for the packet parsed into `meta` (rewritten in `buf` to
        to = (src, sport, dst, dport), IPv4 addresses as integers); raises TableFull or
        KeyBusy, changing nothing."""
        if self._free:
            slot = self._free[-1]
        elif len(self.flows) < self.max_flows:
            slot = len(self.flows)
        else:
            raise TableFull
        rc = lib.pks_flow_open(self.tab, slot, buf, meta, *to, now)
        if rc == -1:
            raise KeyBusy
        if rc != 0:
            raise RuntimeError(f"pks_flow_open: slot {slot} rc {rc}")
        self.tab.flows[slot].fast = 1  # C may decide on its FINs and ACKs from now on
        flow = Flow(slot=slot, **flow_args)
        flow.backend.inactive += 1  # State.NONE until set_state
        if self._free:
            self._free.pop()
            self.flows[slot] = flow
        else:
            self.flows.append(flow)
        self._count += 1
        return flow

    def remove(self, flow: Flow) -> None:
        if flow.state == State.ESTABLISHED:
            flow.backend.active -= 1
        else:
            flow.backend.inactive -= 1
        self.half_open.pop(flow, None)
        lib.pks_table_remove(self.tab, flow.slot)
        self.flows[flow.slot] = None
        self._free.append(flow.slot)
        self._count -= 1
        if flow.timer_seq >= 0:
            self._stale += 1
        flow.timer_seq = -1
        self._compact()

    # ----------------------------------------------------------------- state
    def set_state(self, flow: Flow, state: State, now: float) -> None:
        """The one way a flow's state changes: state, timeout, timer and the backend's
        active/inactive counts move together."""
        was_active = flow.state == State.ESTABLISHED
        if was_active != (state == State.ESTABLISHED):
            step = -1 if was_active else 1
            flow.backend.active += step
            flow.backend.inactive -= step
        if state == State.SYN_RECV:
            self.half_open[flow] = None
            if len(self.half_open) > self.half_open_peak:
                self.half_open_peak = len(self.half_open)
        elif flow.state == State.SYN_RECV:
            del self.half_open[flow]
        flow.state = state
        flow.timeout = self.timeouts[state]
        self.tab.flows[flow.slot].state = state
        due = now + flow.timeout
        if flow.timer_seq < 0 or due < flow.timer_due:
            self._push(flow, due)

    def _push(self, flow: Flow, due: float) -> None:
        if flow.timer_seq >= 0:
            self._stale += 1  # the flow's earlier entry is left in the heap, stale
        self._seq += 1
        flow.timer_seq = self._seq
        flow.timer_due = due
        heapq.heappush(self._heap, (due, self._seq, flow))

    # --------------------------------------------------------------- readings
    def last_seen(self, flow: Flow) -> float:
        return self.tab.flows[flow.slot].last_seen

    def expires_at(self, flow: Flow) -> float:
        return self.tab.flows[flow.slot].last_seen + flow.timeout

    def counters(self, flow: Flow) -> tuple[int, int, int, int]:
        """(packets in, bytes in, packets out, bytes out); in = from the client."""
        f = self.tab.flows[flow.slot]
        return f.pkts[0], f.bytes[0], f.pkts[1], f.bytes[1]

    def native(self, flow: Flow) -> Any:
        return self.tab.flows[flow.slot]

    def _compact(self) -> None:
        """Drop stale heap entries once they outnumber the live ones: a flood of flows that
        are removed before their timer comes due (evicted, reset) would otherwise keep their
        entries, and the Flow objects they hold, until each deadline passes."""
        if self._stale <= COMPACT_MIN or self._stale <= len(self._heap) // 2:
            return
        self._heap = [e for e in self._heap if e[1] == e[2].timer_seq]
        heapq.heapify(self._heap)
        self._stale = 0

    # ----------------------------------------------------------------- expiry
    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> Iterator[Flow]:
        """Yield the flows idle past their timeout at `now`; the caller removes them."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, flow = heapq.heappop(heap)
            if seq != flow.timer_seq:
                self._stale -= 1
                continue  # stale: the flow was removed or got an earlier entry since
            expires = self.expires_at(flow)
            if expires > now:
                flow.timer_seq = -1  # this entry is gone: the new one is not a replacement
                self._push(flow, expires)
            else:
                flow.timer_seq = -1
                yield flow
