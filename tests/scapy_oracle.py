"""scapy as the independent oracle of the tests: checksums recomputed from scratch."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP


def checksums_ok(p: IP) -> bool:
    """scapy recomputes both checksums from scratch; they must equal what the packet carries."""
    fresh = p.copy()
    del fresh.chksum
    del fresh[TCP].chksum
    fresh = IP(bytes(fresh))
    return (fresh.chksum, fresh[TCP].chksum) == (p.chksum, p[TCP].chksum)
