"""Per-client limits of a service (native/pks_clients.h): a client, its address or a prefix of
it, holds at most `max_flows` flows and opens at most `new_flows_per_second` new ones, `burst`
at once (HAProxy's stick tables: conn_cur and conn_rate; IPVS's drop_entry). C counts and
refuses; this is what the config says."""

from __future__ import annotations

import math
from dataclasses import dataclass

RATE_MAX = 1_000_000  # new flows per second per client: beyond any real client's
BURST_MAX = 1_000_000


@dataclass(frozen=True, slots=True)
class ClientLimits:
    max_flows: int = 0  # a client's flows at most; 0: no limit
    new_flows_per_second: float = 0.0  # 0: no limit
    burst: int = 0  # new flows at once; 0: the rate's, rounded up (at least 1)
    prefix: int = 32  # a client is its address's first `prefix` bits

    @property
    def burst_or_default(self) -> int:
        return self.burst or max(1, math.ceil(self.new_flows_per_second))
