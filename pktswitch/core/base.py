"""What every part of the switch shares: the state the parts read and write, declared once.

The switch (core/switch.py) is one object made of parts, one concern a module: the packet
path (switch.py), the events C reports (events.py), the services registry and reload
(registry.py), passive health (passive.py), tracing (tracing.py) and the views the control
API shows (views.py). Switch.__init__ sets every attribute declared here.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from pktswitch.core.cdata import CData
from pktswitch.core.flows import Flow, FlowTable
from pktswitch.core.nat import SnatPool
from pktswitch.core.service import ServiceState
from pktswitch.core.trace import Subscription
from pktswitch.sched.pool import BackendState

if TYPE_CHECKING:
    from pktswitch.core.passive import SynWatch
    from pktswitch.sched.base import Picked

RATE_WINDOW = 10  # seconds over which "new flows per second" is averaged


class SwitchBase:
    mode: str
    hash_secret: bytes  # what C and the hashing schedulers hash clients with
    vnet: int
    _hdr: int
    services: list[ServiceState]
    retired_services: list[ServiceState]  # removed by a reload, flows left
    _by_vip: dict[tuple[int, int], ServiceState]
    snat: list[str]
    _snat_ints: list[int]
    pool: SnatPool
    _unused: set[tuple[bytes, int]]
    _next_sweep: float
    table: FlowTable
    _endpoints: dict[int, int]
    buf: bytearray
    bufp: CData  # the cffi pointer to buf, made once
    meta: CData  # pks_meta *: what pks_process found in the packet
    _events: CData
    _event_bytes: CData
    rx: int
    fast: int
    forwarded: int
    dropped: Counter[str]
    flows_created: int
    flows_expired: Counter[str]
    flows_reused: int
    flows_reset: int
    flows_evicted: int
    flows_answered: int
    flows_reclaimed: Counter[str]
    syn_cookies: str
    _created_per_s: dict[int, int]
    last_drop: str
    subscriptions: list[Subscription]
    _syn_watch: SynWatch
    _passive: list[tuple[ServiceState, BackendState, str]]

    if TYPE_CHECKING:  # one part's methods that another calls

        def process(self, length: int, now: float) -> bool: ...
        def set_syn_cookies(self, mode: str) -> None: ...
        def take_events(self) -> None: ...
        def _created(self, now: float) -> None: ...
        def _expire(self, flow: Flow, now: float, counted: bool = True) -> None: ...
        def _endpoint(self, backend: BackendState) -> int: ...
        def _schedule_ahead(self, svc: ServiceState) -> None: ...
        def _set_services(self, services: list[ServiceState]) -> None: ...
        def _peek(self, svc: ServiceState, client: bytes, cport: int) -> Picked | None: ...
        def service(self, name: str) -> ServiceState: ...
        def refresh(self, now: float, schedule: bool = True) -> list[str]: ...
        def half_open(self, slot: int, gen: int) -> bool: ...
