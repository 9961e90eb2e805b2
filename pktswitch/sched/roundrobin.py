"""The round robins, rr and wrr: answers that never depend on the client, so the switch
writes one whole period of them into C (core/ahead.py), which hands them out in turn. These
classes are the specification C's period is computed from, and the tests' oracle."""

from __future__ import annotations

from collections.abc import Sequence

from pktswitch.sched.base import Picked
from pktswitch.sched.pool import BackendState


class RoundRobin:
    """Each new flow goes to the next backend in turn (IPVS rr): equal servers, equal shares.

    Weights other than 0 are ignored; weight-0 backends are skipped. The reason gives the
    backend's position in the list: "rr: next in turn (2/3)".
    """

    name = "rr"
    OPTIONS: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._next = 0  # index in the list where the search for the next turn starts

    def _choose(self, backends: Sequence[BackendState]) -> int | None:
        n = len(backends)
        for i in range(n):
            j = (self._next + i) % n
            if backends[j].weight > 0:
                return j
        return None

    def _answer(self, backends: Sequence[BackendState], j: int) -> Picked:
        return backends[j], f"rr: next in turn ({j + 1}/{len(backends)})"

    def pick(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        j = self._choose(backends)
        if j is None:
            return None
        self._next = (j + 1) % len(backends)
        return self._answer(backends, j)

    def peek(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        j = self._choose(backends)
        return None if j is None else self._answer(backends, j)

    def update(self, backends: Sequence[BackendState]) -> None:
        pass  # the turn is an index, kept modulo the list's length

    def period(self, backends: Sequence[BackendState]) -> int:
        """Picks after which the answers repeat: one turn of the backends taking flows."""
        return sum(1 for b in backends if b.weight > 0)


# ---------------------------------------------------------------------- weighted round robin
class SmoothWeightedRoundRobin:
    """nginx's smooth weighted round robin (ngx_http_upstream_get_peer).

    Each pick adds every backend's weight to its `current`, takes the backend with the largest
    current (the first in the list on a tie) and subtracts the total weight from it. Over any
    sum(weights) consecutive picks each backend gets exactly its weight, interleaved rather
    than in bursts: weights A=2, B=3, C=5 give C B A C B C C A B C.

    When a weight or the set changes (seen on the next pick, or told by update()), the
    currents restart from 0, as nginx's do on reload: from then on every sum(new weights)
    picks follow the new weights exactly. Reason: "wrr: C current 5 of total 10".
    """

    name = "wrr"
    OPTIONS: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._sig: tuple[tuple[BackendState, int], ...] = ()
        self._current: list[int] = []

    def _choose(
        self, backends: Sequence[BackendState]
    ) -> tuple[tuple[tuple[BackendState, int], ...], list[int], Picked] | None:
        sig = tuple((b, b.weight) for b in backends)
        current = list(self._current) if sig == self._sig else [0] * len(backends)
        total = 0
        best = -1
        for i, b in enumerate(backends):
            w = b.weight
            if w <= 0:
                continue
            current[i] += w
            total += w
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:
            return None
        b = backends[best]
        reason = f"wrr: {b.name} current {current[best]} of total {total}"
        current[best] -= total
        return sig, current, (b, reason)

    def pick(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        chosen = self._choose(backends)
        if chosen is None:
            return None
        self._sig, self._current, picked = chosen
        return picked

    def peek(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        chosen = self._choose(backends)
        return None if chosen is None else chosen[2]

    def update(self, backends: Sequence[BackendState]) -> None:
        sig = tuple((b, b.weight) for b in backends)
        if sig != self._sig:
            self._sig, self._current = sig, [0] * len(backends)

    def period(self, backends: Sequence[BackendState]) -> int:
        """Picks after which the answers repeat: the total weight (each backend has been
        picked `weight` times and every current is back where it was)."""
        return sum(b.weight for b in backends if b.weight > 0)
