"""ICMP at the switch, on scapy-built packets: echo replies for VIPs, errors translated both
ways, everything else counted and dropped. scapy recomputes every checksum as the oracle."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Raw
from scapy.utils import checksum
from test_switch import CLIENT, SNAT, VIP, Harness


def icmp_checksums_ok(p: IP) -> bool:
    """The outer IP header, the whole ICMP message and the quoted IP header each sum to zero
    with their checksum fields in place (scapy's RFC 1071 checksum over the raw bytes: its
    ICMP rebuild would leave out bytes past the quoted packet's total length)."""
    raw = bytes(p)
    q = 20 + 8
    quoted_ihl = (raw[q] & 0x0F) * 4
    return (
        checksum(raw[:20]) == 0
        and checksum(raw[20:]) == 0
        and checksum(raw[q : q + quoted_ihl]) == 0
    )


def test_echo_request_to_a_vip_is_answered_by_the_switch() -> None:
    h = Harness()
    req = IP(src=CLIENT, dst=VIP, ttl=61, id=99) / ICMP(type=8, id=7, seq=3) / Raw(b"ping" * 8)
    out = h.send(req)
    assert out is not None
    assert (out.src, out.dst, out.ttl, out.id) == (VIP, CLIENT, 64, 99)
    assert (out[ICMP].type, out[ICMP].code, out[ICMP].id, out[ICMP].seq) == (0, 0, 7, 3)
    assert out[Raw].load == b"ping" * 8
    raw = bytes(out)
    assert checksum(raw[:20]) == 0 and checksum(raw[20:]) == 0
    s = h.sw.stats(h.now)
    assert (s["icmp_echo_replies"], s["packets_forwarded"], s["dropped"]) == (1, 1, {})


def test_echo_replies_are_rate_limited_as_linux_limits_its_own() -> None:
    h = Harness()
    ping = IP(src=CLIENT, dst=VIP) / ICMP(type=8, id=1, seq=1)
    answered = sum(h.send(ping) is not None for _ in range(60))  # at one instant
    assert answered == 50  # the burst
    h.now += 2**-7  # 7.8 ms (exact in binary): 7.8 tokens at 1000 a second
    assert sum(h.send(ping) is not None for _ in range(10)) == 7
    s = h.sw.stats(h.now)
    assert (s["icmp_echo_replies"], s["dropped"]) == (57, {"icmp_rate": 13})
    h.now += 10  # a long pause refills the burst, no more
    assert sum(h.send(ping) is not None for _ in range(60)) == 50


@pytest.mark.parametrize(
    ("pkt", "reason"),
    [
        (IP(src=CLIENT, dst=SNAT) / ICMP(type=8), "icmp_other"),  # echo to no VIP
        (IP(src=CLIENT, dst=VIP) / ICMP(type=13), "icmp_other"),  # timestamp request
        (IP(src=CLIENT, dst=VIP) / ICMP(type=0), "icmp_other"),  # an echo reply
        (IP(src=CLIENT, dst=VIP) / ICMP(type=8, chksum=0x1234), "icmp_checksum"),
        (IP(src="192.0.2.1", dst=SNAT) / ICMP(type=3, code=3) / Raw(bytes(20)), "icmp_malformed"),
        (  # quotes a UDP packet: no flow of ours
            IP(src="192.0.2.1", dst=SNAT)
            / ICMP(type=3, code=3)
            / IP(src=SNAT, dst="192.0.2.1")
            / UDP(sport=1024, dport=53),
            "icmp_no_flow",
        ),
        (  # quotes an SCTP packet
            IP(src="192.0.2.1", dst=SNAT)
            / ICMP(type=3, code=3)
            / IP(src=SNAT, dst="192.0.2.1", proto=132)
            / Raw(bytes(12)),
            "icmp_malformed",
        ),
        (  # quotes fewer than 8 bytes of TCP
            IP(src="192.0.2.1", dst=SNAT)
            / ICMP(type=3, code=3)
            / Raw(bytes(IP(src=SNAT, dst="192.0.2.1") / TCP(sport=1024, dport=8080))[:27]),
            "icmp_malformed",
        ),
        (  # a well-formed error about a flow the switch does not have
            IP(src="192.0.2.1", dst=SNAT)
            / ICMP(type=3, code=3)
            / IP(src=SNAT, dst="192.0.2.1")
            / TCP(sport=1024, dport=8080, flags="S"),
            "icmp_no_flow",
        ),
    ],
    ids=[
        "echo_no_vip",
        "timestamp",
        "echo_reply",
        "checksum",
        "junk",
        "udp",
        "sctp",
        "short",
        "no_flow",
    ],
)
def test_other_icmp_is_counted_and_dropped(pkt: IP, reason: str) -> None:
    h = Harness()
    assert h.send(pkt) is None
    assert h.sw.dropped == {reason: 1}


@pytest.mark.parametrize(
    "quote", [None, 28, 38, 37], ids=["whole_packet", "8_bytes_of_tcp", "18_bytes", "17_bytes"]
)
def test_error_from_the_backend_reaches_the_client_about_its_own_packet(quote: int | None) -> None:
    h = Harness()
    syn = IP(src=CLIENT, dst=VIP, id=5) / TCP(sport=40000, dport=80, flags="S", seq=100)
    out = h.send(syn)
    assert out is not None and (out.src, out.dst) == (SNAT, "192.0.2.1")
    quoted = bytes(out)[:quote] if quote else bytes(out)
    err = IP(src=out.dst, dst=out.src) / ICMP(type=3, code=3) / Raw(quoted)
    back = h.send(err)
    assert back is not None
    assert (back.src, back.dst, back[ICMP].type, back[ICMP].code) == (VIP, CLIENT, 3, 3)
    # the quoted packet is the client's SYN again, byte for byte (checksums included); a quote
    # that ends inside the TCP checksum field leaves that half byte pair as it was
    whole = len(quoted) if len(quoted) != 37 else 36
    assert bytes(back)[28 : 28 + whole] == bytes(syn)[:whole]
    assert icmp_checksums_ok(back)
    assert h.sw.stats(h.now)["icmp_errors_translated"] == {"to_backend": 0, "to_client": 1}


@pytest.mark.parametrize("seq", [99, 102, 2**31 + 100, 12345])
def test_an_error_quoting_a_sequence_number_not_in_flight_is_dropped(seq: int) -> None:
    """The SYN (seq 100) is all the client sent: an error about its flow must quote 100."""
    h = Harness()
    out = h.send(IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="S", seq=100))
    assert out is not None
    forged = IP(bytes(out))
    forged[TCP].seq = seq
    err = IP(src=out.dst, dst=out.src) / ICMP(type=3, code=3) / Raw(bytes(forged)[:28])
    assert h.send(err) is None
    assert h.sw.dropped == {"icmp_out_of_window": 1}
    assert h.sw.stats(h.now)["icmp_errors_translated"] == {"to_backend": 0, "to_client": 0}


@pytest.mark.parametrize("to", [VIP, CLIENT, "192.0.2.1"])
def test_an_error_not_sent_back_to_the_quoted_source_is_dropped(to: str) -> None:
    """An error about SNAT > backend goes back to SNAT; one addressed elsewhere (the VIP: as
    if from the client side) is forged."""
    h = Harness()
    out = h.send(IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="S", seq=100))
    assert out is not None
    err = IP(src=out.dst, dst=to) / ICMP(type=3, code=3) / Raw(bytes(out)[:28])
    assert h.send(err) is None
    assert h.sw.dropped == {"icmp_misaddressed": 1}
    assert h.sw.stats(h.now)["icmp_errors_translated"] == {"to_backend": 0, "to_client": 0}


@pytest.mark.parametrize("mode", ["fullnat", "nat"])
def test_fragmentation_needed_from_the_client_side_reaches_the_backend(mode: str) -> None:
    h = Harness(mode=mode)
    syn = h.handshake()
    data = (
        IP(src=syn.dst, dst=syn.src)
        / TCP(sport=syn[TCP].dport, dport=syn[TCP].sport, flags="PA", seq=501, ack=101)
        / Raw(b"x" * 1400)
    )
    to_client = h.send(data)
    assert to_client is not None and (to_client.src, to_client.dst) == (VIP, CLIENT)
    err = IP(src=CLIENT, dst=VIP) / ICMP(type=3, code=4, nexthopmtu=1280) / Raw(bytes(to_client))
    fwd = h.send(err)
    assert fwd is not None
    sender = SNAT if mode == "fullnat" else CLIENT
    assert (fwd.src, fwd.dst) == (sender, "192.0.2.1")
    assert (fwd[ICMP].type, fwd[ICMP].code, fwd[ICMP].nexthopmtu) == (3, 4, 1280)
    assert bytes(fwd)[28:] == bytes(data)
    assert icmp_checksums_ok(fwd)
    assert h.sw.stats(h.now)["icmp_errors_translated"] == {"to_backend": 1, "to_client": 0}


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from([3, 4, 11, 12, 5, 8, 42]), body=st.binary(max_size=120))
def test_any_icmp_body_is_forwarded_or_dropped_never_raises(kind: int, body: bytes) -> None:
    h = Harness()
    syn = h.client("S", seq=1)
    assert syn is not None
    # half the time the body starts with the packet the switch sent, then anything
    pkt = IP(src=syn.dst, dst=syn.src) / ICMP(type=kind) / Raw(bytes(syn)[: len(body)] + body)
    out = h.send(pkt)  # the harness checks that a dropped packet is left as it was
    s = h.sw.stats(h.now)
    assert s["packets_forwarded"] + s["packets_dropped"] == s["packets_in"]
    if out is not None:
        assert icmp_checksums_ok(out) or kind == 8
