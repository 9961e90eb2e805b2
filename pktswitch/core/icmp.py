"""ICMP at the switch: echo replies for the VIPs, and errors about a flow translated through it.

A VIP lives nowhere but in the switch, so the switch answers pings to it (a client's first
question is "is it up?"). ICMP errors matter more: an error quotes the IP header and at least
the first 8 bytes (the ports) of the packet that caused it (RFC 792, RFC 1812 4.3.2.3). When
that packet belongs to a switched flow, the error must reach the other side as if the switch
were not there, or path MTU discovery breaks (the "fragmentation needed" of RFC 1191) and
refused connections hang until they time out instead of failing at once.

So an error from the backend side about SNAT:sport > backend:bport goes to the client, with
the quoted packet turned back into client:cport > VIP:vport and the outer header VIP > client;
one from the client side about VIP:vport > client:cport goes to the backend, quoting
backend:bport > SNAT:sport. That is IPVS's ip_vs_nat_icmp() in both directions. The quoted IP
header's checksum is recomputed; the quoted TCP checksum is adjusted when the quote reaches it
(18 bytes of TCP; with the minimum 8 there is no checksum to fix); the ICMP
checksum is recomputed over the message. Lengths never change.

Everything else that is ICMP is counted and dropped: other types, echo requests to addresses
that are no VIP, errors quoting something that is no TCP packet or no known flow.
"""

from __future__ import annotations

from pktswitch._native import lib
from pktswitch.core.cdata import CData
from pktswitch.core.packet import fold

ECHO_REPLY = 0
DEST_UNREACHABLE = 3
SOURCE_QUENCH = 4
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
PARAMETER_PROBLEM = 12
ERRORS = frozenset({DEST_UNREACHABLE, SOURCE_QUENCH, TIME_EXCEEDED, PARAMETER_PROBLEM})

HEADER = 8  # type, code, checksum, 4 bytes that depend on the type
QUOTED_L4 = 8  # the bytes of the transport header an error must quote at least
TCP_CSUM_END = 18  # quoted TCP bytes that include its checksum field
REPLY_TTL = 64  # Linux's default ip_default_ttl for the echo replies the switch originates


def _csum16(buf: bytearray, ptr: CData, off: int, end: int, field: int) -> None:
    """Recompute the Internet checksum of buf[off:end] into the 16-bit field at `field`."""
    buf[field : field + 2] = b"\0\0"
    buf[field : field + 2] = lib.pks_csum(ptr + off, end - off, 0).to_bytes(2, "big")


def echo_reply(buf: bytearray, ptr: CData, ip: int, l4: int, end: int) -> None:
    """Turn the echo request at buf[ip:end] into its reply, in place."""
    buf[ip + 12 : ip + 16], buf[ip + 16 : ip + 20] = buf[ip + 16 : ip + 20], buf[ip + 12 : ip + 16]
    buf[ip + 8] = REPLY_TTL
    _csum16(buf, ptr, ip, l4, ip + 10)
    buf[l4] = ECHO_REPLY
    buf[l4 + 1] = 0
    _csum16(buf, ptr, l4, end, l4 + 2)


def quoted_tcp(buf: bytearray, l4: int, end: int) -> tuple[bytes, int, bytes, int] | None:
    """The TCP packet an error at buf[l4:end] quotes, as (saddr, sport, daddr, dport), or
    None when no such packet is quoted in full enough."""
    q = l4 + HEADER
    if end - q < 20 or buf[q] >> 4 != 4:
        return None
    ihl = (buf[q] & 0x0F) * 4
    if ihl < 20 or end - q < ihl + QUOTED_L4 or buf[q + 9] != 6:
        return None
    th = q + ihl
    return (
        bytes(buf[q + 12 : q + 16]),
        int.from_bytes(buf[th : th + 2], "big"),
        bytes(buf[q + 16 : q + 20]),
        int.from_bytes(buf[th + 2 : th + 4], "big"),
    )


def translate_error(
    buf: bytearray,
    ptr: CData,
    ip: int,
    l4: int,
    end: int,
    outer: tuple[bytes | None, bytes],
    src: tuple[bytes, int],
    dst: tuple[bytes, int],
) -> None:
    """Rewrite the error at buf[ip:end] in place: the outer addresses to outer = (saddr or
    None to keep it, daddr), the quoted packet's source to src and destination to dst (address,
    port); checksums as the module says."""
    q = l4 + HEADER
    ihl = (buf[q] & 0x0F) * 4
    th = q + ihl
    old = bytes(buf[q + 12 : q + 20]) + bytes(buf[th : th + 4])
    new = src[0] + dst[0] + src[1].to_bytes(2, "big") + dst[1].to_bytes(2, "big")
    buf[q + 12 : q + 16], buf[q + 16 : q + 20] = src[0], dst[0]
    buf[th : th + 4] = new[8:]
    _csum16(buf, ptr, q, th, q + 10)
    if end - th >= TCP_CSUM_END:  # RFC 1624: the addresses (pseudo-header) and ports changed
        s = (~int.from_bytes(buf[th + 16 : th + 18], "big")) & 0xFFFF
        for i in range(0, len(old), 2):
            s += (~int.from_bytes(old[i : i + 2], "big") & 0xFFFF) + int.from_bytes(
                new[i : i + 2], "big"
            )
        buf[th + 16 : th + 18] = (~fold(s) & 0xFFFF).to_bytes(2, "big")
    if outer[0] is not None:
        buf[ip + 12 : ip + 16] = outer[0]
    buf[ip + 16 : ip + 20] = outer[1]
    _csum16(buf, ptr, ip, l4, ip + 10)
    _csum16(buf, ptr, l4, end, l4 + 2)
