"""The scheduler interface: given a service's backends and a new flow, pick one and say why.

A scheduler is called once per new flow, never per packet. It returns the backend and a short
reason that is kept on the flow (and shown by `pktswitch flows`), or None when no backend can
take a new flow. Backends with weight 0 take no new flows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pktswitch.sched.pool import BackendState


class Scheduler(Protocol):
    name: str

    def pick(
        self, backends: Sequence[BackendState], client: bytes, cport: int
    ) -> tuple[BackendState, str] | None: ...


class RoundRobin:
    """Each new flow goes to the next backend in turn (IPVS rr): equal servers, equal shares."""

    name = "rr"

    def __init__(self) -> None:
        self._next = 0

    def pick(
        self, backends: Sequence[BackendState], client: bytes, cport: int
    ) -> tuple[BackendState, str] | None:
        n = len(backends)
        for i in range(n):
            b = backends[(self._next + i) % n]
            if b.weight > 0:
                self._next = (self._next + i + 1) % n
                return b, f"rr: next in turn ({(self._next - 1) % n + 1}/{n})"
        return None


SCHEDULERS: dict[str, type[Scheduler]] = {"rr": RoundRobin}


def make(name: str) -> Scheduler:
    return SCHEDULERS[name]()
