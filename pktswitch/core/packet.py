"""The packet model: typed access to what the native parser found in a packet.

Parsing, validation and rewriting run in C (native/) in one call per packet; this module
names what C returns (error reasons, flags, flow keys) and builds the C structs the flow table
needs. Addresses are kept as 16-byte fields so that IPv6 fits the same key later; IPv4 uses
the first four bytes.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from pktswitch._native import ffi, lib
from pktswitch.core.cdata import CData

VERDICT_SLOW = lib.PKS_V_SLOW
VERDICT_FAST = lib.PKS_V_FAST
VERDICT_DROP = lib.PKS_V_DROP

# Drop reasons, indexed by the C code: malformed packets, then what C decided about a packet
# no flow takes (no_flow, no_service, acl_denied, ...).
PARSE_ERRORS: tuple[str, ...] = tuple(
    ffi.string(lib.pks_err_name(i)).decode() for i in range(lib.PKS_E_COUNT)
)
ACL_DENIED = lib.PKS_E_ACL
# a service's per-client limits refused the SYN (counted per service too)
CLIENT_LIMITS = frozenset({lib.PKS_E_CLIENT_FLOWS, lib.PKS_E_CLIENT_RATE, lib.PKS_E_CLIENTS_FULL})
PARSED = lib.PKS_E_NO_FLOW  # codes from here on are of packets that parsed
# Why C left a packet to Python, indexed by the C code (meta.slow; counted in the table).
SLOW_REASONS: tuple[str, ...] = tuple(
    ffi.string(lib.pks_slow_name(i)).decode() for i in range(lib.PKS_SLOW_COUNT)
)
SLOW_EVENTS = lib.PKS_SLOW_EVENTS
# what C hands Python by design: a packet that found the event ring full (rare; it goes through
# C again once Python took the events); any other reason means the switch did not set C up
BY_DESIGN = frozenset({SLOW_REASONS[lib.PKS_SLOW_EVENTS]})

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTOCOLS = {PROTO_TCP: "tcp", PROTO_UDP: "udp"}  # the transports the switch balances
PROTOCOL_NUMBERS = {name: n for n, name in PROTOCOLS.items()}

_FLAG_LETTERS = (
    (0x02, "S"),
    (0x01, "F"),
    (0x04, "R"),
    (0x08, "P"),
    (0x10, "A"),
    (0x20, "U"),
    (0x40, "E"),
    (0x80, "C"),
)


def flags_str(flags: int) -> str:
    """TCP flags as scapy writes them ("S", "SA", "FA", "R", ...)."""
    return "".join(letter for bit, letter in _FLAG_LETTERS if flags & bit)


def ip_bytes(ip: str) -> bytes:
    """An IPv4 address string as its 4 bytes in network order."""
    return ipaddress.IPv4Address(ip).packed


def ip_str(addr: CData) -> str:
    """The IPv4 address held in the first 4 bytes of a C 16-byte address field."""
    return socket.inet_ntoa(ffi.buffer(addr, 4))  # (a tenth of ipaddress's time)


def summary(meta: CData) -> str:
    """One line in scapy's style: 'TCP 198.51.100.2:40312 > 203.0.113.10:80 S'."""
    k = meta.key
    return (
        f"TCP {ip_str(k.saddr)}:{k.sport} > {ip_str(k.daddr)}:{k.dport} {flags_str(meta.tcp_flags)}"
    )


def describe(raw: bytes, length: int | None = None) -> dict[str, Any]:
    """The header fields a trace shows, decoded in Python from the bytes (the readable
    reference of what native/parse.c parses), of a packet of `length` bytes (its first ones,
    when raw is shorter). Fields that are not there are left out."""
    d: dict[str, Any] = {"len": len(raw) if length is None else length}
    if len(raw) < 20 or raw[0] >> 4 != 4:
        return d
    ihl = (raw[0] & 0x0F) * 4
    d["src"] = str(ipaddress.IPv4Address(raw[12:16]))
    d["dst"] = str(ipaddress.IPv4Address(raw[16:20]))
    d["proto"] = raw[9]
    d["ip_csum"] = int.from_bytes(raw[10:12], "big")
    if raw[9] == PROTO_TCP and len(raw) >= ihl + 20:
        t = raw[ihl:]
        d["sport"] = int.from_bytes(t[0:2], "big")
        d["dport"] = int.from_bytes(t[2:4], "big")
        d["flags"] = flags_str(t[13])
        d["tcp_csum"] = int.from_bytes(t[16:18], "big")
    elif raw[9] == PROTO_UDP and len(raw) >= ihl + 8:
        u = raw[ihl:]
        d["sport"] = int.from_bytes(u[0:2], "big")
        d["dport"] = int.from_bytes(u[2:4], "big")
        d["udp_len"] = int.from_bytes(u[4:6], "big")
        d["udp_csum"] = int.from_bytes(u[6:8], "big")
    return d


def fold(s: int) -> int:
    """A one's complement sum folded to 16 bits (RFC 1071)."""
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _csum(data: bytes) -> int:
    s = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data) - 1, 2))
    if len(data) % 2:
        s += data[-1] << 8
    return ~fold(s) & 0xFFFF


def tcp_rst(src: bytes, sport: int, dst: bytes, dport: int, seq: int) -> bytes:
    """A 40-byte TCP RST from src:sport to dst:dport with sequence number `seq`, both
    checksums complete. The receiver accepts it only when seq is exactly the next sequence
    number it expects (RFC 5961); a near miss gets a challenge ACK."""
    ip = bytearray((0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, PROTO_TCP, 0, 0, *src, *dst))
    ip[10:12] = _csum(bytes(ip)).to_bytes(2, "big")
    tcp = bytearray(20)
    tcp[0:2] = sport.to_bytes(2, "big")
    tcp[2:4] = dport.to_bytes(2, "big")
    tcp[4:8] = (seq & 0xFFFFFFFF).to_bytes(4, "big")
    tcp[12] = 5 << 4
    tcp[13] = 0x04  # RST
    pseudo = src + dst + bytes((0, PROTO_TCP, 0, 20))
    tcp[16:18] = _csum(pseudo + bytes(tcp)).to_bytes(2, "big")
    return bytes(ip + tcp)
