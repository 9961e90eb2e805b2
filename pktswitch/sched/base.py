"""The scheduler interface: given a service's backends and a new flow, pick one and say why.

A scheduler is called once per new flow, never per packet. It returns the backend and a short
reason that is kept on the flow (and shown by `pktswitch flows`), or None when no backend can
take a new flow. Backends with weight 0 take no new flows (IPVS quiescing): every scheduler
here skips them, and returns None when no backend has a weight above 0.

The interface (all three take the service's current list of BackendState):

- pick(backends, client, cport) -> (backend, reason) | None: schedule a new flow. `client` is
  the 4-byte client address, `cport` its port. It does not count the flow: the caller raises
  backend.inactive (the flow is in its handshake) and backend.total; lc and wlc read
  active and inactive.
- peek(backends, client, cport): the answer pick would give now, changing nothing that pick
  depends on (rr's turn, wrr's credits): Katran's simulator, `pktswitch which`.
- update(backends): the control plane calls it after any change to the backend set or to a
  weight. iphash and maglev rebuild their table there (only if (backend, name, weight) changed,
  so a spurious call is cheap); wrr restarts its smoothing; rr, lc and wlc keep nothing derived
  from the set and ignore it.

Optional methods and attributes, with which a switch lets C open a service's flows
(core/ahead.py):

- period(backends) -> int: rr and wrr only, whose answers never depend on the client: the
  number of picks after which they repeat. The switch runs a copy (copy.copy) of the
  scheduler for one period: so their pick must replace its state, never change it in place.
- table_for(backends): iphash and maglev, whose table C copies (and hashes the client as
  hash64 does).
- least_loaded: "count" (lc) or "per weight" (wlc), which C runs itself on the flows it
  counts per backend (native/pks_service.h, pks_load): it needs only the backends and their weights.
- reason_for(backends, client, cport, slot, backend): the reason of a flow C opened for
  iphash and maglev (`slot`: where the client hashed) and for lc and wlc, whose backends'
  counts are, when the switch asks, what C's were when it picked.

In a switch every weight or backend change goes through Switch.refresh or reconfigure, which
tell the scheduler (update) and write C's copy again: C does not see a weight changed in
place, so the guards below hold for Python's picks only.

Change detection, so that a forgotten update() is not silently wrong:
- wrr reads every weight on every pick (its algorithm is O(n) anyway) and restarts by itself
  when they change;
- iphash and maglev check in O(1) per pick that the list is the same object with the same
  length as at their last build, and rebuild otherwise. A weight changed in place, or a list
  element replaced in place, is NOT seen by that check - call update(). One more O(1) guard:
  if the table points at a backend whose weight is now 0, they rebuild before answering, so
  quiescing a backend in place is always honoured.

Schedulers, one module per family: sched/roundrobin.py (rr, wrr: nginx's smooth weighted
round robin), sched/tables.py (iphash: IPVS sh; maglev: Maglev / Katran), sched/least.py (lc,
wlc: IPVS; lrt). They are the specification of what C runs (core/ahead.py compiles them into
C's programs) and the tests' oracle for C's picks. `registry.make(name, **options)` builds
one; options come from the config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pktswitch.sched.pool import BackendState

Picked = tuple[BackendState, str]

ACTIVE_WEIGHT = 256  # lc/wlc: an ESTABLISHED flow weighs this many others (IPVS: active << 8)


class Scheduler(Protocol):
    name: str

    def pick(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        """Schedule a new flow: the backend and why, or None if no backend takes new flows."""
        ...

    def peek(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        """What pick would answer now, without changing what the next pick answers."""
        ...

    def update(self, backends: Sequence[BackendState]) -> None:
        """The backend set or a weight changed: rebuild whatever was derived from it."""
        ...


class PickedInC(Protocol):
    """A scheduler C runs itself (iphash, maglev, lc, wlc), which gives the reason of a flow
    C opened (reason_for above)."""

    def reason_for(
        self,
        backends: Sequence[BackendState],
        client: bytes,
        cport: int,
        slot: int,
        b: BackendState,
    ) -> str: ...
