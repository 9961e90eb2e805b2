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
    ip_bytes: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.ip_bytes = ipaddress.IPv4Address(self.ip).packed

    @property
    def endpoint(self) -> tuple[bytes, int]:
        return self.ip_bytes, self.port

    def __str__(self) -> str:
        return f"{self.name} {self.ip}:{self.port}"
