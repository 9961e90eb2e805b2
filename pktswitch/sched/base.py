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
  counts per backend (native/pks.h, pks_load): it needs only the backends and their weights.
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

Schedulers: rr, wrr (nginx's smooth weighted round robin), iphash (IPVS sh), lc, wlc (IPVS),
maglev (Maglev / Katran). `make(name, **options)` builds one; options come from the config.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pktswitch.sched import maglev
from pktswitch.sched.hashing import HASH_KEYS, flow_key, flow_text, hash64
from pktswitch.sched.pool import BackendState

Picked = tuple[BackendState, str]

IPHASH_BUCKETS = 256  # IPVS sh: IP_VS_SH_TAB_SIZE = 256 (ip_vs_sh.c, CONFIG_IP_VS_SH_TAB_BITS=8)
MAX_IPHASH_BUCKETS = 1 << 20  # IPVS allows up to 20 table bits (CONFIG_IP_VS_SH_TAB_BITS)
REASON_RIVALS = 3  # lc/wlc reasons name at most this many other backends, then "+N more"
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


# ---------------------------------------------------------------------- round robin
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


# ---------------------------------------------------------------------- least connections
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
    OPTIONS: tuple[str, ...] = ()
    least_loaded = "count"  # C runs it too, comparing loads by count (lc) or "per weight" (wlc)

    def peek(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        raise NotImplementedError

    def pick(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        return self.peek(backends, client, cport)

    def reason_for(
        self,
        backends: Sequence[BackendState],
        client: bytes,
        cport: int,
        slot: int,
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
    least_loaded = "per weight"

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


# ---------------------------------------------------------------------- hashing schedulers
def _hash_key_option(name: str, hash_key: object) -> bool:
    """Validate the `hash_key` option; True when the client port is hashed too."""
    if hash_key not in HASH_KEYS:
        raise ValueError(
            f"{name}: option hash_key must be one of {', '.join(map(repr, HASH_KEYS))}, "
            f"got {hash_key!r}"
        )
    return hash_key == "ip+port"


def _int_option(name: str, option: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name}: option {option} must be an integer {lo}..{hi}, got {value!r}")
    return value


class _Table:
    """A scheduler that precomputes a lookup table from the backends (iphash, maglev).

    The table maps slot -> index into self._members (small ints, as a data plane would index
    them); -1 for an empty slot. Rebuilt by update(), or lazily as the module docstring says.
    """

    name = ""

    def __init__(self, size: int, with_port: bool) -> None:
        self.size = size
        self.with_port = with_port
        self._src: Sequence[BackendState] | None = None  # the list the table was built from
        self._len = -1
        self._sig: tuple[tuple[BackendState, str, int], ...] | None = None
        self._members: list[BackendState] = []
        self._table: list[int] = [-1] * size

    def _build(self, members: list[BackendState]) -> list[int]:
        raise NotImplementedError

    def _order(self, backends: Sequence[BackendState]) -> list[BackendState]:
        """The backends that get slots (weight > 0), in the order _build takes them."""
        return [b for b in backends if b.weight > 0]

    def update(self, backends: Sequence[BackendState]) -> None:
        self._src, self._len = backends, len(backends)
        sig = tuple((b, b.name, b.weight) for b in backends)
        if sig != self._sig:
            self._sig = sig
            self._members = self._order(backends)
            self._table = self._build(self._members)

    def _fresh(self, backends: Sequence[BackendState]) -> None:
        """The O(1) staleness check: another list, or the same list grown or shrunk."""
        if backends is not self._src or len(backends) != self._len:
            self.update(backends)

    def slots(self, backends: Sequence[BackendState]) -> list[str | None]:
        """Each slot's backend name (None: empty), for tests and for showing the table."""
        self._fresh(backends)
        names = [b.name for b in self._members]
        return [names[i] if i >= 0 else None for i in self._table]

    def _lookup(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        self._fresh(backends)
        key = flow_key(client, cport, self.with_port)
        slot = hash64(key) % self.size
        i = self._table[slot]
        if i >= 0 and self._members[i].weight <= 0:  # quiesced in place without update()
            self.update(backends)
            i = self._table[slot]
        if i < 0:
            return None
        b = self._members[i]
        return b, self._reason(flow_text(client, cport, self.with_port), slot, b)

    def _reason(self, key: str, slot: int, b: BackendState) -> str:
        raise NotImplementedError

    def table_for(self, backends: Sequence[BackendState]) -> tuple[list[BackendState], list[int]]:
        """The members and the slot table (member index, -1 empty) pick uses now: what a
        switch writes into C, which hashes the client as hash64 does (core/ahead.py)."""
        self._fresh(backends)
        return self._members, self._table

    def reason_for(
        self,
        backends: Sequence[BackendState],
        client: bytes,
        cport: int,
        slot: int,
        b: BackendState,
    ) -> str:
        """The reason pick gives a client that hashed to `slot` and got `b`."""
        return self._reason(flow_text(client, cport, self.with_port), slot, b)

    def pick(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        return self._lookup(backends, client, cport)

    def peek(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        # may rebuild a stale table (derived data, the same rebuild pick would do): the answer
        # and every later pick are unchanged by it
        return self._lookup(backends, client, cport)


class SourceHash(_Table):
    """The client address picks the backend (IPVS sh): table[hash(client) % 256].

    Option hash_key="ip+port" hashes the client port too: clients behind one proxy address
    (the mega-proxy problem) then spread over the backends, at the price of one client's
    connections no longer sharing a backend.

    The 256 buckets (option table_size) are filled as IPVS sh fills them, in turns by weight,
    except that the turns follow the smooth weighted round robin order (interleaved, as wrr)
    instead of IPVS's runs of `weight` buckets per backend: each backend then gets close to
    table_size*weight/total buckets even when weights are large next to 256 (IPVS's runs
    give the first backends everything). Weight-0 backends get no bucket. This is not
    consistent hashing: a change of the set or a weight remaps most clients (use maglev for
    that). Reason: "iphash: hash(198.51.100.2) -> bucket 17 -> B".
    """

    name = "iphash"
    OPTIONS = ("hash_key", "table_size")

    def __init__(self, hash_key: str = "ip", table_size: int = IPHASH_BUCKETS) -> None:
        with_port = _hash_key_option(self.name, hash_key)
        size = _int_option(self.name, "table_size", table_size, 1, MAX_IPHASH_BUCKETS)
        super().__init__(size, with_port)

    def _build(self, members: list[BackendState]) -> list[int]:
        if not members:
            return [-1] * self.size
        weights = [b.weight for b in members]
        total = sum(weights)
        current = [0] * len(members)
        table = []
        for _ in range(self.size):
            best = 0
            for i, w in enumerate(weights):
                current[i] += w
                if current[i] > current[best]:
                    best = i
            current[best] -= total
            table.append(best)
        return table

    def _reason(self, key: str, slot: int, b: BackendState) -> str:
        return f"iphash: hash({key}) -> bucket {slot} -> {b.name}"


class MaglevHash(_Table):
    """Maglev consistent hashing (pktswitch.sched.maglev): table[hash(client) % M], M prime.

    Options: table_size (prime, default 65537 as Katran and Envoy, at most Envoy's 5000011),
    hash_key ("ip" or "ip+port", as iphash). The table depends only on the set of (name,
    weight): members are sorted by name (then address) before the turns, so a backend that
    leaves and comes back, in any position of the list, restores exactly the old table.
    Reason: "maglev: hash(198.51.100.2) -> slot 40122 of 65537 -> C".
    """

    name = "maglev"
    OPTIONS = ("hash_key", "table_size")

    def __init__(self, hash_key: str = "ip", table_size: int = maglev.DEFAULT_TABLE_SIZE) -> None:
        with_port = _hash_key_option(self.name, hash_key)
        size = _int_option(self.name, "table_size", table_size, 2, maglev.MAX_TABLE_SIZE)
        if not maglev.is_prime(size):
            raise ValueError(
                f"maglev: option table_size must be a prime number "
                f"(65537 as in Katran and Envoy), got {size}"
            )
        super().__init__(size, with_port)

    def _order(self, backends: Sequence[BackendState]) -> list[BackendState]:
        return sorted((b for b in backends if b.weight > 0), key=lambda b: (b.name, b.ip, b.port))

    def _build(self, members: list[BackendState]) -> list[int]:
        return maglev.build([(b.name, b.weight) for b in members], self.size)

    def _reason(self, key: str, slot: int, b: BackendState) -> str:
        return f"maglev: hash({key}) -> slot {slot} of {self.size} -> {b.name}"


# ---------------------------------------------------------------------- registry
class LeastResponseTime:
    """Least response time by the power of two choices (Mitzenmacher; Envoy, HAProxy random(2)).

    Two backends are drawn at random and the one with the lower score takes the flow, score =
    rt x (active + 1) / weight: the smoothed response time the switch measured (handshakes,
    first responses, probes: see pool.py) scaled by the load it would carry. Drawing two keeps
    a fast backend from taking every new flow at once, and a backend that has not been measured
    yet scores 0, so it is tried. The random source is seeded: the same seed, the same choices.
    """

    name = "lrt"
    OPTIONS: tuple[str, ...] = ()

    def __init__(self, seed: int = 0x5EED) -> None:
        self._rng = random.Random(seed)

    @staticmethod
    def _score(b: BackendState) -> float:
        return 0.0 if b.rt is None else b.rt * (b.active + 1) / b.weight

    @staticmethod
    def _text(b: BackendState) -> str:
        rt = "unmeasured" if b.rt is None else f"{b.rt * 1e3:.1f}ms"
        return f"{b.name} {rt}*({b.active}+1)/{b.weight}"

    def _choose(self, backends: Sequence[BackendState], rng: random.Random) -> Picked | None:
        up = [b for b in backends if b.weight > 0]
        if not up:
            return None
        if len(up) == 1:
            return up[0], f"lrt: {up[0].name}, the only candidate"
        a, b = rng.sample(up, 2)
        if self._score(b) < self._score(a):
            a, b = b, a
        op = "<" if self._score(a) < self._score(b) else "<="
        return a, f"lrt: {self._text(a)} {op} {self._text(b)} (two random choices)"

    def pick(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        return self._choose(backends, self._rng)

    def peek(self, backends: Sequence[BackendState], client: bytes, cport: int) -> Picked | None:
        twin = random.Random()
        twin.setstate(self._rng.getstate())
        return self._choose(backends, twin)

    def update(self, backends: Sequence[BackendState]) -> None:
        pass


SCHEDULERS: dict[str, Callable[..., Scheduler]] = {
    "rr": RoundRobin,
    "wrr": SmoothWeightedRoundRobin,
    "iphash": SourceHash,
    "lc": LeastConnections,
    "wlc": WeightedLeastConnections,
    "maglev": MaglevHash,
    "lrt": LeastResponseTime,
}


def make(name: str, **options: Any) -> Scheduler:
    """A new scheduler by name, with options from the config; ValueError names what is wrong.

    A scheduler class lists the options it takes in OPTIONS (none if it has no such attribute).
    """
    factory = SCHEDULERS.get(name)
    if factory is None:
        known = ", ".join(sorted(SCHEDULERS))
        raise ValueError(f"unknown scheduler {name!r} (known: {known})")
    allowed: tuple[str, ...] = getattr(factory, "OPTIONS", ())
    for option in options:
        if option not in allowed:
            takes = f"options: {', '.join(allowed)}" if allowed else "it takes no options"
            raise ValueError(f"scheduler {name!r} has no option {option!r} ({takes})")
    return factory(**options)
