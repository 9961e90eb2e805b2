"""Backend health as data: the policy of a service and the rules that move a backend between
up, down, ejected, draining and slow start. Pure: results and the clock are passed in; the
checks themselves (sockets) live in control/health_checks.py, the passive signals in the switch.

- Active checks (HAProxy `check`, keepalived): `fall` consecutive failures take a backend
  down, `rise` consecutive successes bring it back.
- Passive signals (HAProxy `observe layer4`, Envoy outlier detection; on for every service
  unless its [service.health] says `passive = false`, as nginx's max_fails): a SYN the
  backend did not answer within `syn_timeout`, or answered with RST, makes the switch check
  the backend itself at once (control/health_checks.py), and only if that check fails too is
  the backend ejected, for `eject` seconds, doubling with each ejection in a row up to
  `eject_max`; a SYN-ACK from it once it is back, or a passed active check, resets the
  doubling. A client can make a healthy backend refuse or drop its SYN; it cannot make the
  switch's own connect fail. The last backend of a service that takes new flows is never
  ejected. A SYN with a wrong TCP checksum opens no flow (C drops it).
- UDP services: the active check is a TCP or HTTP check of a configured `port` (a UDP port
  answers nothing a check could read), or none; the passive signal is an ICMP port
  unreachable from the backend about a flow's datagram, confirmed by the service's check, or
  where it has none by a datagram of the switch's own to the backend's port, which fails only
  if the backend refuses it too (ICMP port unreachable within `timeout`).
- Drain: an operator's word; no new flows, existing ones stay.
- Slow start: a backend that comes back takes weight / slow_start more each second until
  its full weight (weight-aware schedulers; rr ignores weights).

A backend takes new flows iff its effective weight is above 0; the schedulers already skip
weight 0, so health reaches every scheduler through that one number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pktswitch.sched.pool import BackendState

CHECKS = ("tcp", "http", "none")
ON_DOWN = ("keep", "reset")


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    check: str = "tcp"  # HAProxy's default check is a TCP connect
    interval: float = 2.0  # HAProxy `inter` 2 s
    timeout: float = 1.0  # HAProxy `timeout check`
    rise: int = 2  # HAProxy defaults: rise 2, fall 3
    fall: int = 3
    path: str = "/"
    status: int = 200
    passive: bool = True
    syn_timeout: float = 1.0  # Linux retransmits an unanswered SYN after 1 s
    eject: float = 5.0  # Envoy outlier detection: base_ejection_time 30 s; shorter for a lab
    eject_max: float = 60.0
    on_down: str = "keep"  # what happens to a down backend's flows: keep, or reset (RST)
    slow_start: float = 0.0  # seconds; 0 = off
    port: int = 0  # the port tcp and http checks connect to; 0: each backend's own


def state_name(b: BackendState, policy: HealthPolicy, now: float) -> str:
    if not b.up:
        return "down"
    if now < b.ejected_until:
        return "ejected"
    if b.draining:
        return "draining"
    if effective_weight(b, policy, now) < b.config_weight:
        return "slow-start"
    return "up"


def check_result(b: BackendState, ok: bool, policy: HealthPolicy, now: float, detail: str) -> str:
    """Count one active check; the state change it causes, described, or ''."""
    if ok:
        b.streak = b.streak + 1 if b.streak > 0 else 1
        b.ejections = 0
        if not b.up and b.streak >= policy.rise:
            b.up, b.up_since = True, now
            return _changed(b, now, f"up: {b.streak} checks passed")
    else:
        b.streak = b.streak - 1 if b.streak < 0 else -1
        if b.up and -b.streak >= policy.fall:
            b.up = False
            return _changed(b, now, f"down: {-b.streak} checks failed ({detail})")
    return ""


def passive_failure(
    b: BackendState, policy: HealthPolicy, now: float, reason: str, others: int
) -> str:
    """A passive signal the switch's own check confirmed: eject the backend, longer each time
    in a row; never the last one taking new flows (`others`: how many of its service's other
    backends take them), as Envoy's max_ejection_percent keeps some in service."""
    if now < b.ejected_until:
        return ""  # already out: one signal per ejection
    if others <= 0:
        return f"not ejected ({reason}): no other backend takes new flows"
    seconds = min(policy.eject * 2 ** min(b.ejections, 30), policy.eject_max)
    b.ejections += 1
    b.ejected_until = now + seconds
    b.up_since = b.ejected_until  # slow start counts from the return
    return _changed(b, now, f"ejected for {seconds:g} s: {reason}")


def effective_weight(b: BackendState, policy: HealthPolicy, now: float) -> int:
    if not b.up or b.draining or now < b.ejected_until:
        return 0
    ramp = policy.slow_start
    if ramp > 0 and now - b.up_since < ramp and b.config_weight > 0:
        return max(1, math.ceil(b.config_weight * (now - b.up_since) / ramp))
    return b.config_weight


def _changed(b: BackendState, now: float, reason: str) -> str:
    b.health_reason = reason
    b.changed_at = now
    return reason
