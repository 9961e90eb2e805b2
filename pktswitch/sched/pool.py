"""Backends at run time: address, weight and the live counters the schedulers read.

Response times come from what the switch already sees, smoothed as TCP smooths its RTT
(RFC 6298, alpha = 1/8): the handshake (client SYN to backend SYN-ACK, kernel work on the
backend) and the first response (first client data to first backend data, the application's
work). Active probes, TCP connects from the switch, add handshake samples for a backend that
gets no traffic, so that an estimate does not freeze at its last bad value. `rt` smooths all
of them together: it is what least-response-time scheduling compares.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

SMOOTHING = 1 / 8  # RFC 6298's alpha for SRTT


def _smooth(old: float | None, sample: float) -> float:
    return sample if old is None else old + (sample - old) * SMOOTHING


class Counts(Protocol):
    """A backend's flows: ESTABLISHED, in any other state, and ever scheduled to it."""

    @property
    def active(self) -> int: ...
    @property
    def inactive(self) -> int: ...
    @property
    def total(self) -> int: ...
    @property
    def bytes_in(self) -> int: ...  # the bytes of its flows toward it, ever
    @property
    def bytes_out(self) -> int: ...  # and from it


@dataclass(slots=True)
class Load:
    """A backend's flows counted here: a scheduler's own (the tests', a backend no switch
    has numbered). A switch's backend reads C's counts instead (core/flows.py, CLoad)."""

    active: int = 0
    inactive: int = 0
    total: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


class _Count:
    """One of a backend's counts, read from its load (C's record in a switch); set only where
    the backend counts its own flows (a scheduler's tests)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, b: Any, owner: type | None = None) -> int:
        return int(getattr(b.load, self.name))

    def __set__(self, b: Any, n: int) -> None:
        setattr(b._own(), self.name, n)


@dataclass(slots=True, eq=False, weakref_slot=True)  # (weakref: tests see it let go)
class BackendState:
    name: str
    ip: str
    port: int
    weight: int = 1  # effective: what schedulers read; 0 takes no new flows (IPVS quiescing)
    load: Counts = field(default_factory=Load)  # its flows (active, inactive, total below)
    rtt_syn: float | None = None  # smoothed SYN -> SYN-ACK time, seconds
    rt_data: float | None = None  # smoothed first request -> first response time, seconds
    rt: float | None = None  # all samples smoothed together: what lrt compares
    samples: dict[str, int] = field(default_factory=lambda: {"syn": 0, "data": 0, "probe": 0})
    last_sample_at: float = -1.0  # the switch's clock at the last sample
    # health (see health.py): the weight the operator set, and what keeps it from applying
    config_weight: int = -1
    up: bool = True
    draining: bool = False
    ejected_until: float = 0.0
    ejections: int = 0  # passive ejections in a row
    up_since: float = -math.inf
    streak: int = 0  # consecutive active checks: > 0 passed, < 0 failed
    health_reason: str = ""
    changed_at: float = 0.0
    ip_bytes: bytes = field(init=False)
    ip_int: int = field(init=False)

    def __post_init__(self) -> None:
        if self.config_weight < 0:
            self.config_weight = self.weight
        self.ip_bytes = ipaddress.IPv4Address(self.ip).packed
        self.ip_int = int(ipaddress.IPv4Address(self.ip))

    # its flows, from load: ESTABLISHED (IPVS ActiveConn: what lc, wlc and lrt weigh most),
    # in any other state (IPVS InActConn: lc and wlc weigh them 1/256), ever scheduled to it
    active = _Count()
    inactive = _Count()
    total = _Count()
    bytes_in = _Count()  # and the bytes of its flows, ever, toward it and from it
    bytes_out = _Count()

    def _own(self) -> Load:
        """The counts, when they are this object's to set (not C's)."""
        if not isinstance(self.load, Load):
            raise AttributeError(f"{self.name}'s flows are counted by the switch's C table")
        return self.load

    def add_sample(self, kind: str, seconds: float, now: float) -> None:
        """One response-time sample: kind "syn" or "probe" (handshakes) or "data"."""
        self.samples[kind] += 1
        self.last_sample_at = now
        if kind == "data":
            self.rt_data = _smooth(self.rt_data, seconds)
        else:
            self.rtt_syn = _smooth(self.rtt_syn, seconds)
        self.rt = _smooth(self.rt, seconds)

    @property
    def endpoint(self) -> tuple[bytes, int]:
        return self.ip_bytes, self.port

    def __str__(self) -> str:
        return f"{self.name} {self.ip}:{self.port}"
