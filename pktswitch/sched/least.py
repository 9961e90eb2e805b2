"""The least-loaded schedulers: lc and wlc (IPVS), which C runs on the flows it counts per
backend (native/pks_service.h, pks_load), and lrt (least response time by two random
choices), which C runs on those counts and the response times the switch writes. These
classes are the specification and the tests' oracle for C's picks."""

from __future__ import annotations

from collections.abc import Sequence

from pktswitch.sched.base import ACTIVE_WEIGHT, Picked, Told
from pktswitch.sched.pool import BackendState

Flows = tuple[int, int]  # a backend's (ESTABLISHED, other) flows


def overhead(b: BackendState) -> int:
    """What lc and wlc compare, as IPVS's ip_vs_dest_conn_overhead: an ESTABLISHED flow
    weighs ACTIVE_WEIGHT flows in any other state (the handshake, closing, TIME_WAIT). The
    others weigh little, but not nothing: a burst of SYNs, none of them established yet,
    spreads over the backends instead of all going to the first one listed."""
    return b.active * ACTIVE_WEIGHT + b.inactive


def _weighs(flows: Flows) -> int:
    return flows[0] * ACTIVE_WEIGHT + flows[1]


def _flows(b: BackendState, flows: Flows) -> str:
    return f"{b.name} {flows[0]}+{flows[1]}"


def _more(up: int) -> str:
    """The candidates not named in a reason (the chosen and the runner-up are)."""
    return f", +{up - 2} more" if up > 2 else ""


class _Least:
    """What lc and wlc share: they keep nothing, so pick is peek; C runs them too. A reason
    names the chosen backend and the runner-up (the least loaded after it) with the flows
    each had at the pick, which is what C tells of its own picks (Told)."""

    name = ""
    program = ""
    OPTIONS: tuple[str, ...] = ()

    def peek(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        ranked = self._ranked(backends)
        if ranked is None:
            return None
        best, runner, up = ranked
        b = backends[best]
        other = backends[runner] if runner >= 0 else None
        theirs = (other.active, other.inactive) if other is not None else (0, 0)
        return b, self._reason(b, (b.active, b.inactive), other, theirs, up)

    def pick(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        return self.peek(backends, client, cport)

    def reason_for(
        self,
        backends: Sequence[BackendState],
        client: bytes,
        cport: int,
        told: Told,
        b: BackendState,
    ) -> str:
        """The reason of a flow C gave `b`, from the flows C counted at its pick on b and on
        the runner-up, backends[told.value] (-1: none)."""
        other = backends[told.value] if told.value >= 0 else None
        up = sum(1 for x in backends if x.weight > 0)
        mine, theirs = (told.active[0], told.inactive[0]), (told.active[1], told.inactive[1])
        return self._reason(b, mine, other, theirs, up)

    def update(self, backends: Sequence[BackendState]) -> None:
        pass

    def _ranked(self, backends: Sequence[BackendState]) -> tuple[int, int, int] | None:
        """(the chosen's index, the runner-up's or -1, backends with a weight), or None."""
        raise NotImplementedError

    def _reason(
        self, b: BackendState, mine: Flows, other: BackendState | None, theirs: Flows, up: int
    ) -> str:
        raise NotImplementedError


class LeastConnections(_Least):
    """Fewest flows wins, an ESTABLISHED one weighing 256 others (IPVS lc: `overhead`);
    weight-0 backends are left out.

    Ties go to the first in the list, as in IPVS (a deterministic answer that `pktswitch which`
    can predict). Reason: the chosen backend's established+other flows against the
    runner-up's, "lc: A 2+0 < C 3+0, +1 more", or on a tie "lc: A 2+0 <= B 2+0, +1 more (tie:
    first listed)".
    """

    name = "lc"
    program = "lc"

    def _ranked(self, backends: Sequence[BackendState]) -> tuple[int, int, int] | None:
        # (overhead, place in the list): the least first, equals in list order
        ranked = sorted((overhead(b), i) for i, b in enumerate(backends) if b.weight > 0)
        if not ranked:
            return None
        return ranked[0][1], ranked[1][1] if len(ranked) > 1 else -1, len(ranked)

    def _reason(
        self, b: BackendState, mine: Flows, other: BackendState | None, theirs: Flows, up: int
    ) -> str:
        if other is None:
            return f"lc: {_flows(b, mine)}, the only candidate"
        tie = _weighs(theirs) == _weighs(mine)
        reason = f"lc: {_flows(b, mine)} {'<=' if tie else '<'} {_flows(other, theirs)}"
        return reason + _more(up) + (" (tie: first listed)" if tie else "")


class WeightedLeastConnections(_Least):
    """Smallest overhead per weight wins (IPVS wlc, `overhead` as lc's); weight-0 backends
    are left out.

    As IPVS, the ratios are compared without division: overhead(a) * b.weight <
    overhead(b) * a.weight; ties go to the first in the list. Reason: "wlc: A 3+1 per 2=1.50
    < B 5+0 per 3=1.67": the chosen's and the runner-up's established+other flows per weight,
    the ratio in established flows ((established + other/256) / weight), with the decimals
    that tell a smaller ratio from a larger one (2 at least, up to 4).
    """

    name = "wlc"
    program = "wlc"

    def _ranked(self, backends: Sequence[BackendState]) -> tuple[int, int, int] | None:
        loads = [overhead(b) for b in backends]

        def less(i: int, j: int) -> bool:  # i's load per weight below j's
            return loads[i] * backends[j].weight < loads[j] * backends[i].weight

        best = runner = -1
        up = 0
        for i, b in enumerate(backends):
            if b.weight <= 0:
                continue
            up += 1
            if best < 0 or less(i, best):
                best, runner = i, best
            elif runner < 0 or less(i, runner):
                runner = i
        return None if best < 0 else (best, runner, up)

    def _reason(
        self, b: BackendState, mine: Flows, other: BackendState | None, theirs: Flows, up: int
    ) -> str:
        if other is None:
            return f"wlc: {_flows(b, mine)} per {b.weight}, the only candidate"
        ratio_b = _weighs(mine) / (ACTIVE_WEIGHT * b.weight)
        ratio_o = _weighs(theirs) / (ACTIVE_WEIGHT * other.weight)
        tie = _weighs(theirs) * b.weight == _weighs(mine) * other.weight
        digits = 2  # as many decimals as tell the runner-up's larger ratio from b's
        while not tie and digits < 4 and f"{ratio_o:.{digits}f}" == f"{ratio_b:.{digits}f}":
            digits += 1
        mine_text = f"{_flows(b, mine)} per {b.weight}={ratio_b:.{digits}f}"
        theirs_text = f"{_flows(other, theirs)} per {other.weight}={ratio_o:.{digits}f}"
        reason = f"wlc: {mine_text} {'<=' if tie else '<'} {theirs_text}"
        return reason + _more(up) + (" (tie: first listed)" if tie else "")


MASK64 = (1 << 64) - 1


def splitmix64(state: int) -> tuple[int, int]:
    """splitmix64 (Steele, Lea, Flood 2014): the next state and output, as C's (open.c)."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


class LeastResponseTime:
    """Least response time by the power of two choices (Mitzenmacher; Envoy, HAProxy random(2)).

    Two backends with a weight are drawn at random and the second drawn takes the flow only if
    its score is lower, score = rt x (active + 1) / weight: the smoothed response time the
    switch measured (handshakes, first responses, probes: see pool.py) scaled by the load it
    would carry. Drawing two keeps a fast backend from taking every new flow at once, and a
    backend that has not been measured yet scores 0, so it is tried. The draw: with n
    backends up, i = r1 % n and j = r2 % (n - 1), j moved past i, r1 and r2 the next outputs
    of splitmix64 from the seed; C runs exactly this (native/open.c). Reason: "lrt: B 2.0ms*(1+1)/1
    < A 9.0ms*(0+1)/1 (two random choices)".
    """

    name = "lrt"
    program = "lrt"
    OPTIONS: tuple[str, ...] = ()

    def __init__(self, seed: int = 0x5EED) -> None:
        self._state = seed & MASK64

    @staticmethod
    def _score(b: BackendState, rt: float | None, active: int) -> float:
        return 0.0 if rt is None else rt * (active + 1) / b.weight

    @staticmethod
    def _text(b: BackendState, rt: float | None, active: int) -> str:
        shown = "unmeasured" if rt is None else f"{rt * 1e3:.1f}ms"
        return f"{b.name} {shown}*({active}+1)/{b.weight}"

    def _reason(
        self,
        a: BackendState,
        rt_a: float | None,
        b: BackendState,
        rt_b: float | None,
        active: tuple[int, int],
    ) -> str:
        if a is b:
            return f"lrt: {a.name}, the only candidate"
        op = "<" if self._score(a, rt_a, active[0]) < self._score(b, rt_b, active[1]) else "<="
        mine, theirs = self._text(a, rt_a, active[0]), self._text(b, rt_b, active[1])
        return f"lrt: {mine} {op} {theirs} (two random choices)"

    def _choose(self, backends: Sequence[BackendState]) -> tuple[int, Picked] | None:
        up = [b for b in backends if b.weight > 0]
        if not up:
            return None
        state = self._state
        a = b = up[0]
        if len(up) > 1:
            state, r1 = splitmix64(state)
            state, r2 = splitmix64(state)
            i, j = r1 % len(up), r2 % (len(up) - 1)
            a, b = up[i], up[j + (j >= i)]
            if self._score(b, b.rt, b.active) < self._score(a, a.rt, a.active):
                a, b = b, a
        return state, (a, self._reason(a, a.rt, b, b.rt, (a.active, b.active)))

    def pick(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        chosen = self._choose(backends)
        if chosen is None:
            return None
        self._state, picked = chosen
        return picked

    def peek(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        chosen = self._choose(backends)
        return None if chosen is None else chosen[1]

    def update(self, backends: Sequence[BackendState]) -> None:
        pass

    def state(self, backends: Sequence[BackendState]) -> list[int]:
        """The random source's state, as C's int64_t holds it."""
        return [self._state - (1 << 64) if self._state >> 63 else self._state]

    def resume(self, backends: Sequence[BackendState], state: Sequence[int]) -> None:
        self._state = state[0] & MASK64

    def reason_for(
        self,
        backends: Sequence[BackendState],
        client: bytes,
        cport: int,
        told: Told,
        b: BackendState,
    ) -> str:
        """`b` won over backends[told.value], with the response times and the ESTABLISHED
        flows C had at its pick."""
        return self._reason(b, told.rt[0], backends[told.value], told.rt[1], told.active)
