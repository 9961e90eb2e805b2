"""Access control per service: which client addresses may open a flow.

Checked once per new flow (on the SYN), never per packet: a flow that was admitted keeps going
until it ends, as with HAProxy's `tcp-request connection reject` or an nftables rule matched
in `ct state new`. The rule, in one sentence: a client is refused if its address is in a
`deny` prefix, or if `allow` is given and its address is in none of the `allow` prefixes.
So `deny` wins over `allow`, and an empty `allow` means everyone not denied.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Acl:
    allow: tuple[str, ...] = ()  # IPv4 prefixes, e.g. "198.51.100.0/24"; () = every address
    deny: tuple[str, ...] = ()

    def compile(self) -> CompiledAcl:
        return CompiledAcl(_ints(self.allow), _ints(self.deny))


def _ints(prefixes: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    out = []
    for p in prefixes:
        net = ipaddress.IPv4Network(p)
        out.append((int(net.network_address), int(net.netmask)))
    return tuple(out)


class CompiledAcl:
    """The prefixes as (network, mask) integers, tested against host-order addresses."""

    __slots__ = ("allow", "deny")

    def __init__(
        self, allow: tuple[tuple[int, int], ...], deny: tuple[tuple[int, int], ...]
    ) -> None:
        self.allow = allow
        self.deny = deny

    def permits(self, addr: int) -> bool:
        for net, mask in self.deny:
            if addr & mask == net:
                return False
        if not self.allow:
            return True
        return any(addr & mask == net for net, mask in self.allow)
