"""Every scheduler by its config name, and `make`, which builds one with its options."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pktswitch.sched.base import Scheduler
from pktswitch.sched.least import LeastConnections, LeastResponseTime, WeightedLeastConnections
from pktswitch.sched.roundrobin import RoundRobin, SmoothWeightedRoundRobin
from pktswitch.sched.tables import MaglevHash, SourceHash

SCHEDULERS: dict[str, Callable[..., Scheduler]] = {
    "rr": RoundRobin,
    "wrr": SmoothWeightedRoundRobin,
    "iphash": SourceHash,
    "lc": LeastConnections,
    "wlc": WeightedLeastConnections,
    "maglev": MaglevHash,
    "lrt": LeastResponseTime,
}


def make(name: str, **options: Any) -> Scheduler:
    """A new scheduler by name, with options from the config; ValueError names what is wrong.

    A scheduler class lists the options it takes in OPTIONS (none if it has no such attribute).
    """
    factory = SCHEDULERS.get(name)
    if factory is None:
        known = ", ".join(sorted(SCHEDULERS))
        raise ValueError(f"unknown scheduler {name!r} (known: {known})")
    allowed: tuple[str, ...] = getattr(factory, "OPTIONS", ())
    for option in options:
        if option not in allowed:
            takes = f"options: {', '.join(allowed)}" if allowed else "it takes no options"
            raise ValueError(f"scheduler {name!r} has no option {option!r} ({takes})")
    return factory(**options)
