"""The hashing schedulers: iphash (IPVS sh) and maglev (Maglev, Katran), whose table the
switch copies into C; C hashes the client as sched/hashing.py does and reads the slot. These
classes are the specification and the tests' oracle for C's picks."""

from __future__ import annotations

from collections.abc import Sequence

from pktswitch.sched import maglev
from pktswitch.sched.base import Picked, Told
from pktswitch.sched.hashing import HASH_KEY, HASH_KEYS, flow_key, flow_text, hash64
from pktswitch.sched.pool import BackendState

IPHASH_BUCKETS = 256  # IPVS sh: IP_VS_SH_TAB_SIZE = 256 (ip_vs_sh.c, CONFIG_IP_VS_SH_TAB_BITS=8)
MAX_IPHASH_BUCKETS = 1 << 20  # IPVS allows up to 20 table bits (CONFIG_IP_VS_SH_TAB_BITS)


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
    A client is hashed under `key`: the public HASH_KEY until a switch sets its secret.
    """

    name = ""
    program = "hash"

    def __init__(self, size: int, with_port: bool) -> None:
        self.size = size
        self.with_port = with_port
        self.key = HASH_KEY
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
        slot = hash64(key, self.key) % self.size
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
        told: Told,
        b: BackendState,
    ) -> str:
        """The reason pick gives a client that hashed to slot told.value and got `b`."""
        return self._reason(flow_text(client, cport, self.with_port), told.value, b)

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
