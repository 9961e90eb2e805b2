"""A service as the switch runs it: its VIP and port, scheduler, backends, health policy,
access list and per-client limits, and its program in C (core/ahead.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pktswitch.core import packet
from pktswitch.core.acl import CompiledAcl
from pktswitch.core.ahead import Ahead
from pktswitch.core.limits import ClientLimits
from pktswitch.sched.base import Scheduler
from pktswitch.sched.health_policy import HealthPolicy
from pktswitch.sched.pool import BackendState
from pktswitch.sched.registry import make

if TYPE_CHECKING:
    from pktswitch.control.config_schema import Service

# a UDP flow's idle timeout unless the service says (IPVS's: ipvsadm --set's udp)
DEFAULT_UDP_TIMEOUT = 300.0

# a service without [service.health]: no active checks, passive signals on (nginx's default)
NO_HEALTH = HealthPolicy(check="none", passive=True)


@dataclass(slots=True, eq=False, weakref_slot=True)  # (weakref: tests see it let go)
class ServiceState:
    name: str
    vip: str
    port: int
    scheduler: Scheduler
    backends: list[BackendState]
    protocol: str = "tcp"  # or "udp" (core/packet.py PROTOCOLS)
    udp_timeout: float = DEFAULT_UDP_TIMEOUT  # a UDP flow's idle seconds
    one_packet: bool = False  # UDP: each datagram scheduled on its own (IPVS's -o)
    health: HealthPolicy = NO_HEALTH
    acl: CompiledAcl | None = None  # None: every client may connect
    denied: int = 0  # SYNs refused by the acl
    per_client: ClientLimits | None = None  # None: no client is limited
    limited: Counter[str] = field(default_factory=Counter)  # SYNs refused by them, by reason
    # the scheduler as configured: its name and options, to tell what a reload changes
    sched_spec: tuple[str, tuple[tuple[str, object], ...]] = ("", ())
    # backends a reload removed: no new flows, kept until their last flow ends
    retired: list[BackendState] = field(default_factory=list)
    vip_bytes: bytes = b""
    # its scheduler compiled into C's program, which opens its flows
    # (core/ahead.py)
    ahead: Ahead | None = None

    def __post_init__(self) -> None:
        self.vip_bytes = packet.ip_bytes(self.vip)
        if not self.sched_spec[0]:
            self.sched_spec = (self.scheduler.name, ())


def service_state(s: Service) -> ServiceState:
    """A service of the config (control/config.py's Service) as the switch runs it."""
    return ServiceState(
        name=s.name,
        vip=s.vip,
        port=s.port,
        protocol=s.protocol,
        udp_timeout=s.udp_timeout,
        one_packet=s.one_packet,
        scheduler=make(s.scheduler, **dict(s.options)),
        backends=[BackendState(b.name, b.ip, b.port, b.weight) for b in s.backends],
        health=s.health or NO_HEALTH,
        acl=s.acl.compile() if s.acl is not None else None,
        per_client=s.per_client,
        sched_spec=(s.scheduler, tuple(s.options)),
    )


def spec_text(sched_spec: tuple[str, tuple[tuple[str, object], ...]]) -> str:
    name, options = sched_spec
    return " ".join([name, *(f"{k}={v}" for k, v in options)])
