"""Backends at run time: address, weight and the live counters the schedulers read."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class BackendState:
    name: str
    ip: str
    port: int
    weight: int = 1  # 0: takes no new flows, keeps its existing ones (IPVS quiescing)
    active: int = 0  # flows on this backend now
    total: int = 0  # flows ever scheduled to it
    closed_bytes: list[int] = field(default_factory=lambda: [0, 0])  # of expired flows: in, out
    rtt_syn: float | None = None  # smoothed SYN -> SYN-ACK time, seconds
    rtt_samples: int = 0
    ip_bytes: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.ip_bytes = ipaddress.IPv4Address(self.ip).packed

    def add_rtt_sample(self, seconds: float) -> None:
        """Smooth handshake times as TCP smooths RTT (RFC 6298: alpha = 1/8)."""
        self.rtt_samples += 1
        if self.rtt_syn is None:
            self.rtt_syn = seconds
        else:
            self.rtt_syn += (seconds - self.rtt_syn) / 8

    @property
    def endpoint(self) -> tuple[bytes, int]:
        return self.ip_bytes, self.port

    def __str__(self) -> str:
        return f"{self.name} {self.ip}:{self.port}"
