"""TUN offloads: packets behind a virtio_net_hdr, GSO super-packets and partial checksums.

Inside one host nobody verifies a partial checksum, so these tests finish it the way a device
would (sum from csum_start, the field holding the pseudo-header sum) and compare the result
with scapy's own full computation of the rewritten packet.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.packet import Raw
from scapy.utils import checksum
from test_switch import client_ipv4

from pktswitch.core.switch import ServiceState, Switch
from pktswitch.sched.pool import BackendState
from pktswitch.sched.registry import make

VIP, SNAT, CLIENT = "203.0.113.10", "203.0.113.1", "198.51.100.2"
NEEDS_CSUM = 1
GSO_NONE, GSO_TCPV4 = 0, 1


def vnet_header(flags: int, gso_type: int, hdr_len: int, gso_size: int, start: int) -> bytes:
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, start, 16)


def with_partial_checksum(pkt: IP) -> bytes:
    """The packet as a sender with checksum offload hands it over: the TCP checksum field
    holds the folded pseudo-header sum, not complemented (Linux: ~tcp_v4_check(len, s, d, 0))."""
    raw = bytearray(bytes(pkt))
    ihl = (raw[0] & 0x0F) * 4
    l4len = len(raw) - ihl
    pseudo = raw[12:20] + struct.pack("!BBH", 0, 6, l4len)
    raw[ihl + 16 : ihl + 18] = struct.pack("!H", (~checksum(bytes(pseudo))) & 0xFFFF)
    return bytes(raw)


def finish(raw: bytes) -> bytes:
    """Complete a partial TCP checksum as the device would: sum from csum_start (the TCP header)
    with the field as it is, complement, store."""
    out = bytearray(raw)
    ihl = (out[0] & 0x0F) * 4
    out[ihl + 16 : ihl + 18] = struct.pack("!H", checksum(bytes(out[ihl:])))
    return bytes(out)


def scapy_recomputed(raw: bytes) -> IP:
    p = IP(raw)
    del p.chksum
    del p[TCP].chksum
    return IP(bytes(p))


def switch(vnet: bool = True) -> Switch:
    svc = ServiceState("s", VIP, 80, make("rr"), [BackendState("A", "192.0.2.1", 8080)])
    return Switch([svc], snat=[SNAT], seed=5, vnet=vnet, snat_start=0)


def push(sw: Switch, data: bytes, now: float = 1.0) -> bytes | None:
    sw.buf[: len(data)] = data
    return bytes(sw.buf[: len(data)]) if sw.process(len(data), now) else None


def test_partial_checksum_is_adjusted_for_addresses_only() -> None:
    sw = switch()
    pkt = IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="S")
    hdr = vnet_header(NEEDS_CSUM, GSO_NONE, 0, 0, 20)
    out = push(sw, hdr + with_partial_checksum(pkt))
    assert out is not None
    assert out[:10] == hdr  # the virtio_net_hdr goes back as it came
    ip = out[10:]
    p = IP(ip)
    assert (p.src, p[TCP].sport, p.dst, p[TCP].dport) == (SNAT, 1024, "192.0.2.1", 8080)
    fresh = scapy_recomputed(ip)
    assert p.chksum == fresh.chksum  # the IP header checksum is complete and right
    assert IP(finish(ip))[TCP].chksum == fresh[TCP].chksum  # the partial one, once finished


def test_gso_super_packet_both_ways() -> None:
    sw = switch()
    syn = IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="S")
    out = push(sw, vnet_header(NEEDS_CSUM, GSO_NONE, 0, 0, 20) + with_partial_checksum(syn))
    assert out is not None
    p = IP(out[10:])
    # 64000 bytes of data from the backend: one GSO super-packet, segmented later by the kernel
    big = IP(src="192.0.2.1", dst=p.src) / TCP(sport=8080, dport=p[TCP].sport, flags="A")
    big = big / Raw(bytes(range(256)) * 250)
    hdr = vnet_header(NEEDS_CSUM, GSO_TCPV4, 40, 1448, 20)
    reply = push(sw, hdr + with_partial_checksum(big))
    assert reply is not None and reply[:10] == hdr
    ip = reply[10:]
    q = IP(ip)
    assert (q.src, q[TCP].sport, q.dst, q[TCP].dport) == (VIP, 80, CLIENT, 40000)
    fresh = scapy_recomputed(ip)
    assert q.chksum == fresh.chksum
    assert IP(finish(ip))[TCP].chksum == fresh[TCP].chksum


def test_vnet_without_needs_csum_gets_the_full_incremental_update() -> None:
    sw = switch()
    pkt = IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="S")
    out = push(sw, vnet_header(0, GSO_NONE, 0, 0, 0) + bytes(pkt))
    assert out is not None
    p = IP(out[10:])
    fresh = scapy_recomputed(out[10:])
    assert (p.chksum, p[TCP].chksum) == (fresh.chksum, fresh[TCP].chksum)


def test_a_checksum_start_that_is_not_tcp_is_refused() -> None:
    sw = switch()
    pkt = IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="S")
    for bad in (vnet_header(NEEDS_CSUM, 0, 0, 0, 24), vnet_header(NEEDS_CSUM, 0, 0, 0, 20)[:8]):
        data = bad + (b"\x00\x0c" if len(bad) == 8 else b"") + with_partial_checksum(pkt)
        assert push(sw, data) is None
    assert push(sw, b"\x01" * 9) is None
    assert sw.dropped == {"vnet_header": 3}


@settings(max_examples=150, deadline=None)
@given(
    client=client_ipv4,
    cport=st.integers(1, 65535),
    payload=st.integers(0, 4000),
    options=st.booleans(),
    partial=st.booleans(),
)
def test_rewrites_behind_a_vnet_header_are_exact(
    client: str, cport: int, payload: int, options: bool, partial: bool
) -> None:
    if client in (VIP, SNAT, "192.0.2.1"):
        return
    sw = switch()
    opts = [("MSS", 1460), ("NOP", None), ("WScale", 7)] if options else []
    syn = IP(src=client, dst=VIP) / TCP(sport=cport, dport=80, flags="S", options=opts)
    flags = NEEDS_CSUM if partial else 0
    tcp_start = 20
    raw_syn = with_partial_checksum(syn) if partial else bytes(syn)
    first = push(sw, vnet_header(flags, 0, 0, 0, tcp_start) + raw_syn)
    assert first is not None
    data = IP(src=client, dst=VIP) / TCP(sport=cport, dport=80, flags="PA") / Raw(b"x" * payload)
    raw = with_partial_checksum(data) if partial else bytes(data)
    out = push(sw, vnet_header(flags, GSO_TCPV4 if payload > 1448 else 0, 40, 1448, 20) + raw)
    assert out is not None
    ip = finish(out[10:]) if partial else out[10:]
    p, fresh = IP(ip), scapy_recomputed(ip)
    assert (p.src, p.dst, p[TCP].dport) == (SNAT, "192.0.2.1", 8080)
    assert (p.chksum, p[TCP].chksum) == (fresh.chksum, fresh[TCP].chksum)
