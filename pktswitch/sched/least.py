"""The least-loaded schedulers: lc and wlc (IPVS), which C runs on the flows it counts per
backend (native/pks_service.h, pks_load), and lrt (least response time by two random
choices), which C runs on those counts and the response times the switch writes. These
classes are the specification and the tests' oracle for C's picks."""

from __future__ import annotations

from collections.abc import Sequence

from pktswitch.sched.base import ACTIVE_WEIGHT, Picked, Told
from pktswitch.sched.pool import BackendState

REASON_RIVALS = 3  # lc/wlc reasons name at most this many other backends, then "+N more"


def _rivals(parts: list[str], others: int) -> str:
    """The first REASON_RIVALS of the `others` other backends (`parts`: those only, the rest
    are not formatted), then how many more there are."""
    shown = ", ".join(parts)
    more = others - len(parts)
    return f"{shown}, +{more} more" if more > 0 else shown


def overhead(b: BackendState) -> int:
    """What lc and wlc compare, as IPVS's ip_vs_dest_conn_overhead: an ESTABLISHED flow
    weighs ACTIVE_WEIGHT flows in any other state (the handshake, closing, TIME_WAIT). The
    others weigh little, but not nothing: a burst of SYNs, none of them established yet,
    spreads over the backends instead of all going to the first one listed."""
    return b.active * ACTIVE_WEIGHT + b.inactive


def _flows(b: BackendState) -> str:
    return f"{b.name} {b.active}+{b.inactive}"


class _Least:
    """What lc and wlc share: they keep nothing, so pick is peek; C runs them too."""

    name = ""
    program = ""
    OPTIONS: tuple[str, ...] = ()

    def peek(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        raise NotImplementedError

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
        """The reason of a flow C gave `b`, from the counts C had when it picked (the
        switch's when it applies the flow's OPEN event)."""
        picked = self.peek(backends, client, cport)
        if picked is None or picked[0] is not b:  # C and Python counted differently: a bug
            return f"{self.name}: {b.name} (picked in C on other counts than Python's)"
        return picked[1]

    def update(self, backends: Sequence[BackendState]) -> None:
        pass


class LeastConnections(_Least):
    """Fewest flows wins, an ESTABLISHED one weighing 256 others (IPVS lc: `overhead`);
    weight-0 backends are left out.

    Ties go to the first in the list, as in IPVS (a deterministic answer that `pktswitch which`
    can predict). Reason: each backend's established+other flows, "lc: A 2+0 < C 3+0, B 3+1"
    (rivals by least overhead first), or on a tie "lc: A 2+0 <= B 2+0, C 3+0 (tie: first
    listed)".
    """

    name = "lc"
    program = "lc"

    def peek(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        # (overhead, place in the list): the least first, equals in list order
        ranked = sorted((overhead(b), i) for i, b in enumerate(backends) if b.weight > 0)
        if not ranked:
            return None
        best = backends[ranked[0][1]]
        if len(ranked) == 1:
            return best, f"lc: {_flows(best)}, the only candidate"
        tie = ranked[1][0] == ranked[0][0]
        shown = ranked[1 : 1 + REASON_RIVALS]
        rivals = _rivals([_flows(backends[i]) for _, i in shown], len(ranked) - 1)
        reason = f"lc: {_flows(best)} {'<=' if tie else '<'} {rivals}"
        return best, reason + (" (tie: first listed)" if tie else "")


class WeightedLeastConnections(_Least):
    """Smallest overhead per weight wins (IPVS wlc, `overhead` as lc's); weight-0 backends
    are left out.

    As IPVS, the ratios are compared without division: overhead(a) * b.weight <
    overhead(b) * a.weight; ties go to the first in the list. Reason: "wlc: A 3+1 per 2=1.50
    < B 5+0 per 3=1.67": established+other flows per weight, the ratio in established flows
    ((established + other/256) / weight), with the decimals that tell a smaller ratio from a
    larger one (2 at least, up to 4).
    """

    name = "wlc"
    program = "wlc"

    def peek(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        loads = [overhead(b) for b in backends]
        best = -1
        for i, b in enumerate(backends):
            if b.weight > 0 and (
                best < 0 or loads[i] * backends[best].weight < loads[best] * b.weight
            ):
                best = i
        if best < 0:
            return None
        picked = backends[best]
        w, load = picked.weight, loads[best]
        # the ratios as floats, for the order the others are shown in (equals in list order)
        ratios = [
            load_i / (ACTIVE_WEIGHT * b.weight or 1)
            for load_i, b in zip(loads, backends, strict=True)
        ]
        others = [i for i, b in enumerate(backends) if b.weight > 0 and i != best]
        if not others:
            return picked, f"wlc: {_flows(picked)} per {w}, the only candidate"
        others.sort(key=ratios.__getitem__)
        shown = others[:REASON_RIVALS]
        tie = loads[others[0]] * w == load * backends[others[0]].weight
        digits = 2  # as many decimals as tell a larger ratio from best's
        for i in shown:
            if loads[i] * w != load * backends[i].weight:
                while digits < 4 and f"{ratios[i]:.{digits}f}" == f"{ratios[best]:.{digits}f}":
                    digits += 1

        def ratio(i: int) -> str:
            return f"{_flows(backends[i])} per {backends[i].weight}={ratios[i]:.{digits}f}"

        rivals = _rivals([ratio(i) for i in shown], len(others))
        reason = f"wlc: {ratio(best)} {'<=' if tie else '<'} {rivals}"
        return picked, reason + (" (tie: first listed)" if tie else "")


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
    def _score(b: BackendState, rt: float | None) -> float:
        return 0.0 if rt is None else rt * (b.active + 1) / b.weight

    @staticmethod
    def _text(b: BackendState, rt: float | None) -> str:
        shown = "unmeasured" if rt is None else f"{rt * 1e3:.1f}ms"
        return f"{b.name} {shown}*({b.active}+1)/{b.weight}"

    def _reason(
        self, a: BackendState, rt_a: float | None, b: BackendState, rt_b: float | None
    ) -> str:
        if a is b:
            return f"lrt: {a.name}, the only candidate"
        op = "<" if self._score(a, rt_a) < self._score(b, rt_b) else "<="
        return f"lrt: {self._text(a, rt_a)} {op} {self._text(b, rt_b)} (two random choices)"

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
            if self._score(b, b.rt) < self._score(a, a.rt):
                a, b = b, a
        return state, (a, self._reason(a, a.rt, b, b.rt))

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
        """`b` won over backends[told.value], with the response times C had at its pick
        and the counts C had then (the switch's when it applies the flow's OPEN event)."""
        return self._reason(b, told.rt[0], backends[told.value], told.rt[1])
