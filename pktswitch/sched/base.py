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

What a switch needs to compile a scheduler into the program C runs (core/ahead.py):

- program: which one C runs, "rr", "wrr", "hash" (iphash, maglev), "lc", "wlc" or "lrt".
- state(backends) -> list[int] and resume(backends, state): rr and wrr keep state
  between picks (rr's turn, wrr's currents). The switch writes it into
  C with the program; C moves it on with every flow it opens, and the switch reads it back
  into the scheduler (resume) before it changes the program or peeks.
- table_for(backends): iphash and maglev, whose table C copies (and hashes the client as
  hash64 does).
- reason_for(backends, client, cport, told, backend): the reason of a flow C opened, from
  what C told of its pick (Told): lc, wlc and lrt are told the counts (and lrt the
  response times) C picked on.

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
from typing import NamedTuple, Protocol

from pktswitch.sched.pool import BackendState

Picked = tuple[BackendState, str]

ACTIVE_WEIGHT = 256  # lc/wlc: an ESTABLISHED flow weighs this many others (IPVS: active << 8)


class Told(NamedTuple):
    """What C tells of a pick it made (native/pks_flow.h, PKS_EV_OPEN), for the reason."""

    value: int = 0  # rr: the member's index; wrr: its current; hashed: the client's slot;
    # lc, wlc, lrt: the runner-up's (-1: none)
    total: int = 0  # wrr: the total weight
    rt: tuple[float | None, float | None] = (None, None)  # lrt: the chosen's and runner-up's
    # lc, wlc, lrt: the chosen's and the runner-up's flows at the pick, ESTABLISHED and other
    active: tuple[int, int] = (0, 0)
    inactive: tuple[int, int] = (0, 0)


class Scheduler(Protocol):
    name: str
    program: str  # the program C runs for it (core/ahead.py)

    def pick(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        """Schedule a new flow: the backend and why, or None if no backend takes new flows."""
        ...

    def peek(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        """What pick would answer now, without changing what the next pick answers."""
        ...

    def update(self, backends: Sequence[BackendState]) -> None:
        """The backend set or a weight changed: rebuild whatever was derived from it."""
        ...

    def reason_for(
        self,
        backends: Sequence[BackendState],
        client: bytes,
        cport: int,
        told: Told,
        b: BackendState,
    ) -> str:
        """The reason of a flow C opened on b, from what C told of the pick."""
        ...


class Stateful(Scheduler, Protocol):
    """rr, wrr: state kept between picks, which C moves on (core/ahead.py)."""

    def state(self, backends: Sequence[BackendState]) -> list[int]: ...
    def resume(self, backends: Sequence[BackendState], state: Sequence[int]) -> None: ...


class Hashed(Scheduler, Protocol):
    """iphash, maglev: a table C copies, and the key C hashes clients with."""

    with_port: bool
    key: bytes

    def table_for(
        self, backends: Sequence[BackendState]
    ) -> tuple[list[BackendState], list[int]]: ...
