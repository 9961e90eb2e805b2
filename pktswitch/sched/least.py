"""The least-loaded schedulers: lc and wlc (IPVS), which C runs on the flows it counts per
backend (native/pks_service.h, pks_load), and lrt (least response time), which C runs on
those counts and the response times the switch writes. These classes are the specification
and the tests' oracle for C's picks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from pktswitch.sched.base import ACTIVE_WEIGHT, Picked, Told
from pktswitch.sched.pool import BackendState

Flows = tuple[int, int]  # a backend's (ESTABLISHED, other) flows
Rts = tuple[float | None, float | None]  # lrt: the chosen's and the runner-up's response times


class At(NamedTuple):
    """What a reason tells of a pick besides the two backends: the chosen's and the
    runner-up's flows, how many backends had a weight, and (lrt) both response times."""

    mine: Flows
    theirs: Flows
    up: int
    rts: Rts


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


def _best_two(
    backends: Sequence[BackendState], less: Callable[[int, int], bool]
) -> tuple[int, int, int] | None:
    """(the least's index, the runner-up's or -1, backends with a weight) by `less` over
    the indices of backends with a weight, ties to the first listed; None: none has one."""
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


class _Least:
    """What lc, wlc and lrt share: they keep nothing, so pick is peek; C runs them too. A
    reason names the chosen backend and the runner-up (the least loaded after it) with the
    flows each had at the pick (and for lrt the response times), which is what C tells of
    its own picks (Told)."""

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
        rts = (b.rt, other.rt if other is not None else None)
        return b, self._reason(b, other, At((b.active, b.inactive), theirs, up, rts))

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
        the runner-up, backends[told.value] (-1: none), and for lrt their response times."""
        other = backends[told.value] if told.value >= 0 else None
        up = sum(1 for x in backends if x.weight > 0)
        mine, theirs = (told.active[0], told.inactive[0]), (told.active[1], told.inactive[1])
        return self._reason(b, other, At(mine, theirs, up, told.rt))

    def update(self, backends: Sequence[BackendState]) -> None:
        pass

    def _ranked(self, backends: Sequence[BackendState]) -> tuple[int, int, int] | None:
        """(the chosen's index, the runner-up's or -1, backends with a weight), or None."""
        raise NotImplementedError

    def _reason(self, b: BackendState, other: BackendState | None, at: At) -> str:
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
        loads = [overhead(b) for b in backends]
        return _best_two(backends, lambda i, j: loads[i] < loads[j])

    def _reason(self, b: BackendState, other: BackendState | None, at: At) -> str:
        if other is None:
            return f"lc: {_flows(b, at.mine)}, the only candidate"
        tie = _weighs(at.theirs) == _weighs(at.mine)
        reason = f"lc: {_flows(b, at.mine)} {'<=' if tie else '<'} {_flows(other, at.theirs)}"
        return reason + _more(at.up) + (" (tie: first listed)" if tie else "")


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

        return _best_two(backends, less)

    def _reason(self, b: BackendState, other: BackendState | None, at: At) -> str:
        if other is None:
            return f"wlc: {_flows(b, at.mine)} per {b.weight}, the only candidate"
        mine, theirs = at.mine, at.theirs
        ratio_b = _weighs(mine) / (ACTIVE_WEIGHT * b.weight)
        ratio_o = _weighs(theirs) / (ACTIVE_WEIGHT * other.weight)
        tie = _weighs(theirs) * b.weight == _weighs(mine) * other.weight
        digits = 2  # as many decimals as tell the runner-up's larger ratio from b's
        while not tie and digits < 4 and f"{ratio_o:.{digits}f}" == f"{ratio_b:.{digits}f}":
            digits += 1
        mine_text = f"{_flows(b, mine)} per {b.weight}={ratio_b:.{digits}f}"
        theirs_text = f"{_flows(other, theirs)} per {other.weight}={ratio_o:.{digits}f}"
        reason = f"wlc: {mine_text} {'<=' if tie else '<'} {theirs_text}"
        return reason + _more(at.up) + (" (tie: first listed)" if tie else "")


def _score(b: BackendState, rt: float | None, overhead_: int) -> float:
    """lrt's score: the response time times the overhead with the new flow (one more
    ESTABLISHED) per weight, in doubles in this order, as C; unmeasured scores 0."""
    return 0.0 if rt is None else rt * (overhead_ + ACTIVE_WEIGHT) / b.weight


def _timed(b: BackendState, rt: float | None, flows: Flows) -> str:
    shown = "unmeasured" if rt is None else f"{rt * 1e3:.1f}ms"
    return f"{b.name} {shown} {flows[0]}+{flows[1]} per {b.weight}"


class LeastResponseTime(_Least):
    """Least response time: the backend whose smoothed response time (what the switch
    measured: handshakes, first responses, probes; see pool.py), times the flows it would
    carry with the new one (lc's overhead, the new flow one more ESTABLISHED), per weight, is
    least wins; weight-0 backends are left out, ties go to the first in the list (nginx's
    least_time and IPVS's sed weigh the same way). A backend not measured yet scores 0, so
    it is tried first.

    Every backend is scored: with two random choices instead (drawing two, keeping the
    better), a draw of two slow backends must send to one of them, and netns-lab/bench_lrt.py
    measured 32 % of new flows going to the two slow ones of three (docs/performance.md).
    Reason: the chosen's and the runner-up's response time and established+other flows per
    weight, "lrt: A 0.2ms 2+0 per 1 < C 51.3ms 0+0 per 1, +1 more".
    """

    name = "lrt"
    program = "lrt"

    def _ranked(self, backends: Sequence[BackendState]) -> tuple[int, int, int] | None:
        scores = [_score(b, b.rt, overhead(b)) if b.weight > 0 else 0.0 for b in backends]
        return _best_two(backends, lambda i, j: scores[i] < scores[j])

    def _reason(self, b: BackendState, other: BackendState | None, at: At) -> str:
        mine, theirs, rts = at.mine, at.theirs, at.rts
        if other is None:
            return f"lrt: {_timed(b, rts[0], mine)}, the only candidate"
        tie = _score(other, rts[1], _weighs(theirs)) == _score(b, rts[0], _weighs(mine))
        reason = f"lrt: {_timed(b, rts[0], mine)} {'<=' if tie else '<'} "
        reason += _timed(other, rts[1], theirs) + _more(at.up)
        return reason + (" (tie: first listed)" if tie else "")
