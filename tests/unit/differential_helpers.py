"""TCP/IPv4 packets for the differential tests, packed with struct: a scapy packet costs tens
of microseconds to build and as much to parse, and these tests send over 100,000 of them.
test_differential.py holds these bytes equal to scapy's, so scapy stays the oracle."""

from __future__ import annotations

import struct

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
IP_LEN = 20
TCP_LEN = 20
PACKET_LEN = IP_LEN + TCP_LEN  # no options, no payload
WINDOW = 8192  # scapy's TCP() default
TTL = 64  # scapy's IP() default
IP_ID = 1  # scapy's IP() default

_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_PSEUDO = struct.Struct("!4s4sBBH")


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp4(
    src: bytes, sport: int, dst: bytes, dport: int, flags: int, seq: int = 0, ack: int = 0
) -> bytes:
    """An IPv4 TCP packet without options or payload, both checksums right; the same bytes as
    scapy's IP(src=, dst=) / TCP(sport=, dport=, flags=, seq=, ack=)."""
    tcp = _TCP.pack(sport, dport, seq, ack, (TCP_LEN // 4) << 4, flags, WINDOW, 0, 0)
    pseudo = _PSEUDO.pack(src, dst, 0, 6, TCP_LEN)
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = _IP.pack(0x45, 0, PACKET_LEN, IP_ID, 0, TTL, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp


def endpoints(pkt: bytes | bytearray) -> tuple[bytes, int, bytes, int]:
    """(source address, source port, destination address, destination port) of a packet
    tcp4 built (rewritten or not)."""
    sport, dport = struct.unpack_from("!HH", pkt, IP_LEN)
    return bytes(pkt[12:16]), sport, bytes(pkt[16:20]), dport


def checksums_ok(pkt: bytes | bytearray) -> bool:
    """Both checksums of a packet tcp4 built, as rewritten, recomputed from scratch."""
    pkt = bytes(pkt[:PACKET_LEN])
    pseudo = _PSEUDO.pack(pkt[12:16], pkt[16:20], 0, 6, TCP_LEN)
    return checksum(pkt[:IP_LEN]) == 0 and checksum(pseudo + pkt[IP_LEN:]) == 0
