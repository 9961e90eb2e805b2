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

The pool lives in C (native/pks_snat.h) because C opens flows too (a scheduled SYN
takes its pair there without Python); this class numbers the endpoints and speaks for it.
Each endpoint's freed pairs wait in a ring of pair numbers and times, 12 bytes each, that
doubles when full (from RING_MIN) up to the pool's size (756 KiB toward a backend that took
64,512 connections through one SNAT address and the default ports). A queue outlives its
backend (a new backend at the same address must not meet its ports' TIME_WAITs), until
`drop`: once none of its pairs is in use or was freed within BACKEND_TIME_WAIT, a later
backend at that address may get any pair, and a new queue's random start is as good as the
old order.
"""

from __future__ import annotations

import random

from pktswitch._native import ffi, lib
from pktswitch.core.cdata import CData

# Linux net.ipv4.tcp_fin_timeout / TCP_TIMEWAIT_LEN: how long a backend keeps TIME_WAIT.
BACKEND_TIME_WAIT = float(lib.PKS_TIME_WAIT)

RING_MIN = lib.PKS_RING_MIN  # freed pairs a backend's ring holds before it first grows
DEFAULT_PORTS = (1024, 65535)  # IPVS/conntrack leave the well-known ports alone as well


class SnatPool:
    """Allocates (SNAT address index, port) pairs per backend endpoint, least recently used."""

    def __init__(
        self, naddrs: int, ports: tuple[int, int] = DEFAULT_PORTS, start: int | None = None
    ) -> None:
        """`start`: the first pair toward every backend; None picks one at random per backend."""
        lo, hi = ports
        if naddrs < 1 or not 1 <= lo <= hi <= 65535:
            raise ValueError(f"bad SNAT pool: {naddrs} addresses, ports {lo}-{hi}")
        ptr = lib.pks_snat_new(naddrs, lo, hi)
        if ptr == ffi.NULL:
            raise MemoryError("cannot allocate the SNAT pool")
        self.ptr = ffi.gc(ptr, lib.pks_snat_free)
        self.naddrs = naddrs
        self.lo = lo
        self.size = naddrs * (hi - lo + 1)
        self.start = start
        self._endpoints: dict[object, int] = {}
        self._free: list[int] = []  # numbers of dropped queues, for the next new ones

    @property
    def queues(self) -> int:
        """Endpoints with a queue."""
        return len(self._endpoints)

    def endpoint(self, backend: object) -> int:
        """The number of `backend`'s queue in the C pool (made on first use)."""
        ep = self._endpoints.get(backend)
        if ep is None:
            ep = self._free[-1] if self._free else len(self._endpoints)
            first = random.randrange(self.size) if self.start is None else self.start % self.size
            if lib.pks_snat_add(self.ptr, ep, first) != 0:
                raise MemoryError("no memory for an SNAT queue")
            if self._free:
                self._free.pop()
            self._endpoints[backend] = ep
        return ep

    def drop(self, backend: object, now: float) -> bool:
        """Let go of `backend`'s queue if it may go (see the module's docstring): True when
        it went or there was none, False while a pair toward it is in use or freed within
        BACKEND_TIME_WAIT."""
        ep = self._endpoints.get(backend)
        if ep is None:
            return True
        if lib.pks_snat_drop(self.ptr, ep, now) != 0:
            return False
        del self._endpoints[backend]
        self._free.append(ep)
        return True

    def alloc(self, backend: object, now: float) -> tuple[int, int] | None:
        """A free (address index, port) toward `backend`, or None when all are in use."""
        n = lib.pks_snat_alloc(self.ptr, self.endpoint(backend), now)
        if n < 0:
            return None
        return n % self.naddrs, self.lo + n // self.naddrs

    def free(self, backend: object, pair: tuple[int, int], now: float) -> None:
        addr, port = pair
        n = (port - self.lo) * self.naddrs + addr
        rc = lib.pks_snat_release(self.ptr, self.endpoint(backend), n, now)
        if rc == -2:
            raise MemoryError("no memory for the SNAT ring")
        if rc != 0:
            raise RuntimeError(f"SNAT pool: {pair} freed toward {backend} but not in use")

    def _queue(self, backend: object) -> CData | None:
        ep = self._endpoints.get(backend)
        return None if ep is None else self.ptr.q[ep]

    def in_use(self, backend: object) -> int:
        q = self._queue(backend)
        return q.in_use if q else 0

    def freed(self, backend: object) -> tuple[int, int]:
        """Pairs waiting in `backend`'s ring of freed pairs, and the ring's capacity."""
        q = self._queue(backend)
        return (q.count, q.cap) if q else (0, 0)

    @property
    def exhausted(self) -> int:  # allocations refused: every pair toward that backend in use
        return int(self.ptr.exhausted)

    @property
    def early_reuse(self) -> int:  # pairs reused toward a backend within BACKEND_TIME_WAIT
        return int(self.ptr.early_reuse)

    @property
    def in_use_by_addr(self) -> list[int]:  # pairs in use, per SNAT address (all backends)
        return [self.ptr.in_use_by_addr[i] for i in range(self.naddrs)]
