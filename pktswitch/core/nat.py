"""SNAT port allocation for full NAT.

A full-NAT flow is known on the backend side by (backend ip, backend port, SNAT ip, SNAT port),
so an SNAT (address, port) pair only has to be unique per backend endpoint: each backend gets
the whole pool (addresses x ports), like Linux conntrack's SNAT does per destination.

Freed pairs go to the back of that backend's queue and the oldest freed pair is handed out
first: a pair comes back to the same backend as late as possible. This matters because the
backend closes first in most HTTP exchanges and then keeps the old connection in TIME_WAIT
(60 s on Linux); a new SYN from the same SNAT pair inside that window is dropped by the
backend's PAWS check and retransmitted for seconds. Pairs never used yet are handed out before
any freed one, spread round robin over the SNAT addresses, starting at a random point of the
pool: a switch that restarts has forgotten which pairs it used, and starting where the last
one started (1024, 1025, ...) would hit the TIME_WAITs it left on every backend.
"""

from __future__ import annotations

import random
from array import array

# Linux net.ipv4.tcp_fin_timeout / TCP_TIMEWAIT_LEN: how long a backend keeps TIME_WAIT.
BACKEND_TIME_WAIT = 60.0

RING_MIN = 1024  # freed pairs a backend's ring holds before it first grows
DEFAULT_PORTS = (1024, 65535)  # IPVS/conntrack leave the well-known ports alone as well


class _Queue:
    """One backend's pairs: a walk through the fresh ones, then a FIFO ring of freed ones.

    The ring is two flat arrays (pair number, time freed) that double when full, up to the
    pool's size: a pair is in use, fresh or in the ring, so the ring never holds more than
    the pool. 12 bytes per freed pair at most (a deque of tuples cost ~100, which a SYN flood
    turned into megabytes)."""

    __slots__ = ("_count", "_head", "_pairs", "_times", "fresh", "in_use", "size", "start")

    def __init__(self, start: int, size: int) -> None:
        self.start = start  # where this backend's walk through the pool begins
        self.fresh = 0  # pairs start .. start + fresh (mod size) were handed out at least once
        self.in_use = 0
        self.size = size
        self._pairs: array[int] = array("I")
        self._times: array[float] = array("d")
        self._head = 0  # the oldest freed pair's place in the ring
        self._count = 0  # freed pairs in the ring

    def __len__(self) -> int:
        return self._count

    def push(self, pair: int, now: float) -> None:
        cap = len(self._pairs)
        if self._count == cap:
            if cap >= self.size:
                raise RuntimeError("SNAT pool: more pairs freed than handed out")
            grown = min(self.size, max(RING_MIN, 2 * cap))
            order = [(self._head + k) % cap for k in range(self._count)] if cap else []
            pairs, times = array("I", bytes(4 * grown)), array("d", bytes(8 * grown))
            for k, i in enumerate(order):
                pairs[k], times[k] = self._pairs[i], self._times[i]
            self._pairs, self._times, self._head, cap = pairs, times, 0, grown
        i = (self._head + self._count) % cap
        self._pairs[i] = pair
        self._times[i] = now
        self._count += 1

    def pop(self) -> tuple[int, float]:
        assert self._count
        i = self._head
        self._head = (i + 1) % len(self._pairs)
        self._count -= 1
        return self._pairs[i], self._times[i]


class SnatPool:
    """Allocates (SNAT address index, port) pairs per backend endpoint, least recently used."""

    def __init__(
        self, naddrs: int, ports: tuple[int, int] = DEFAULT_PORTS, start: int | None = None
    ) -> None:
        """`start`: the first pair toward every backend; None picks one at random per backend."""
        lo, hi = ports
        if naddrs < 1 or not 1 <= lo <= hi <= 65535:
            raise ValueError(f"bad SNAT pool: {naddrs} addresses, ports {lo}-{hi}")
        self.naddrs = naddrs
        self.lo = lo
        self.size = naddrs * (hi - lo + 1)
        self.start = start
        self._queues: dict[object, _Queue] = {}
        self.exhausted = 0  # allocations refused: every pair toward that backend in use
        self.early_reuse = 0  # pairs reused toward a backend within BACKEND_TIME_WAIT
        self.in_use_by_addr = [0] * naddrs  # pairs in use, per SNAT address (all backends)

    def _pair(self, n: int) -> tuple[int, int]:
        return n % self.naddrs, self.lo + n // self.naddrs

    def alloc(self, backend: object, now: float) -> tuple[int, int] | None:
        """A free (address index, port) toward `backend`, or None when all are in use."""
        q = self._queues.get(backend)
        if q is None:
            first = random.randrange(self.size) if self.start is None else self.start % self.size
            q = self._queues[backend] = _Queue(first, self.size)
        if q.fresh < self.size:
            n = (q.start + q.fresh) % self.size
            q.fresh += 1
        elif len(q):
            n, freed_at = q.pop()
            if now - freed_at < BACKEND_TIME_WAIT:
                self.early_reuse += 1
        else:
            self.exhausted += 1
            return None
        q.in_use += 1
        pair = self._pair(n)
        self.in_use_by_addr[pair[0]] += 1
        return pair

    def free(self, backend: object, pair: tuple[int, int], now: float) -> None:
        q = self._queues[backend]
        addr, port = pair
        q.push((port - self.lo) * self.naddrs + addr, now)
        q.in_use -= 1
        self.in_use_by_addr[addr] -= 1

    def in_use(self, backend: object) -> int:
        q = self._queues.get(backend)
        return q.in_use if q else 0
