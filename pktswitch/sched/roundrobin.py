"""The round robins, rr and wrr: answers that never depend on the client, only on the
scheduler's state (rr's turn, wrr's currents), which C keeps and moves on as it opens flows
(native/open.c, PKS_PROG_RR and _WRR). These classes are the specification of what C runs,
and the tests' oracle."""

from __future__ import annotations

from collections.abc import Sequence

from pktswitch.sched.base import Picked, Told
from pktswitch.sched.pool import BackendState


class RoundRobin:
    """Each new flow goes to the next backend in turn (IPVS rr): equal servers, equal shares.

    Weights other than 0 are ignored; weight-0 backends are skipped. The reason gives the
    backend's position in the list: "rr: next in turn (2/3)".
    """

    name = "rr"
    program = "rr"
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

    def state(self, backends: Sequence[BackendState]) -> list[int]:
        return [self._next]

    def resume(self, backends: Sequence[BackendState], state: Sequence[int]) -> None:
        (self._next,) = state

    def reason_for(
        self, backends: Sequence[BackendState], client: bytes, cport: int, told: Told,
        b: BackendState,
    ) -> str:  # fmt: skip
        return self._answer(backends, told.value)[1]


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
    program = "wrr"
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
        reason = self._reason(b, current[best], total)
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

    @staticmethod
    def _reason(b: BackendState, current: int, total: int) -> str:
        return f"wrr: {b.name} current {current} of total {total}"

    def state(self, backends: Sequence[BackendState]) -> list[int]:
        """The currents, or 0s when the weights or the set changed since the last pick."""
        if tuple((b, b.weight) for b in backends) != self._sig:
            return [0] * len(backends)
        return list(self._current)

    def resume(self, backends: Sequence[BackendState], state: Sequence[int]) -> None:
        self._sig, self._current = tuple((b, b.weight) for b in backends), list(state)

    def reason_for(
        self, backends: Sequence[BackendState], client: bytes, cport: int, told: Told,
        b: BackendState,
    ) -> str:  # fmt: skip
        return self._reason(b, told.value, told.total)
