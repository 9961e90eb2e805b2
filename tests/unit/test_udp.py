"""UDP services (native/parse.c, open.c, process.c, rewrite.c): the first datagram of a new
5-tuple opens a flow in state UDP with the service's udp_timeout, the rest of it follows the
flow both ways, and an ICMP error about it is translated as for TCP. scapy is the oracle of
every header and checksum."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Raw
from scapy_oracle import checksums_ok
from test_icmp import icmp_checksums_ok
from test_switch import BACKENDS, CLIENT, SNAT, VIP, push

from pktswitch.cli import trace_text
from pktswitch.control.streams import event
from pktswitch.core.switch import ServiceState, Switch
from pktswitch.core.tcpstate import DEFAULT_TIMEOUTS
from pktswitch.core.trace import HEADERS_SNAP as MIN_SNAP
from pktswitch.core.trace import Subscription
from pktswitch.sched.pool import BackendState
from pktswitch.sched.registry import make

T0 = 1000.0
UDP_TIMEOUT = 30.0


class Udp:
    """A switch with service "dns" on VIP:53/udp over A, B, C (port 5353), round robin."""

    def __init__(
        self, mode: str = "fullnat", names: str = "ABC", one_packet: bool = False, **kw: object
    ) -> None:
        backends = [BackendState(n, BACKENDS[n], 5353) for n in names]
        svc = ServiceState("dns", VIP, 53, make("rr"), backends, protocol="udp",
                           udp_timeout=UDP_TIMEOUT, one_packet=one_packet)  # fmt: skip
        self.sw = Switch([svc], mode=mode, snat=[SNAT] if mode == "fullnat" else [], seed=1,
                         snat_start=0, timeouts=dict(DEFAULT_TIMEOUTS), **kw)  # type: ignore[arg-type]  # fmt: skip
        self.now = T0

    def send(self, pkt: IP) -> IP | None:
        out = push(self.sw, pkt, self.now)
        assert out is None or len(out) == len(pkt)
        return out

    def query(self, sport: int = 40000, payload: bytes = b"query", **kw: object) -> IP | None:
        return self.send(IP(src=CLIENT, dst=VIP) / UDP(sport=sport, dport=53, **kw) / payload)

    def answer(self, out: IP, payload: bytes = b"answer", **kw: object) -> IP | None:
        """The backend's answer to a datagram the switch sent it."""
        u = out[UDP]
        return self.send(IP(src=out.dst, dst=out.src) / UDP(sport=u.dport, dport=u.sport, **kw)
                         / payload)  # fmt: skip


def udp_ok(p: IP) -> bool:
    """scapy recomputes the IP and UDP checksums (a UDP checksum of 0 is "none": kept)."""
    fresh = p.copy()
    del fresh.chksum
    if p[UDP].chksum != 0:
        del fresh[UDP].chksum
    fresh = IP(bytes(fresh))
    return (fresh.chksum, fresh[UDP].chksum) == (p.chksum, p[UDP].chksum)


@pytest.mark.parametrize("mode", ["fullnat", "nat"])
def test_a_datagram_opens_a_flow_and_its_answer_comes_back(mode: str) -> None:
    u = Udp(mode)
    out = u.query()
    assert out is not None and udp_ok(out)
    src = SNAT if mode == "fullnat" else CLIENT
    assert (out.src, out.dst, out[UDP].dport, bytes(out[UDP].payload)) == (
        src, BACKENDS["A"], 5353, b"query",
    )  # fmt: skip
    back = u.answer(out)
    assert back is not None and udp_ok(back)
    assert (back.src, back.dst, back[UDP].sport, back[UDP].dport) == (VIP, CLIENT, 53, 40000)
    assert bytes(back[UDP].payload) == b"answer"
    (row,) = u.sw.flows(u.now)
    assert (row["protocol"], row["state"], row["timeout"]) == ("udp", "UDP", UDP_TIMEOUT)
    assert (row["packets_in"], row["packets_out"], row["backend"]) == (1, 1, "A")
    s = u.sw.stats(u.now)
    assert (s["flows_created"], s["half_open"]) == (1, 0)


def test_each_client_socket_is_scheduled_and_keeps_its_backend() -> None:
    u = Udp()
    picks = []
    for sport in (40000, 40001, 40002, 40000, 40001):
        out = u.query(sport)
        assert out is not None
        picks.append(out.dst)
    a, b, c = BACKENDS["A"], BACKENDS["B"], BACKENDS["C"]
    assert picks == [a, b, c, a, b]
    assert len(u.sw.table) == 3


def test_a_udp_flow_expires_after_its_services_udp_timeout() -> None:
    u = Udp()
    assert u.query() is not None
    u.now += UDP_TIMEOUT - 1
    u.sw.expire(u.now)
    assert len(u.sw.table) == 1
    assert u.query() is not None  # refreshed
    u.now += UDP_TIMEOUT - 1
    u.sw.expire(u.now)
    assert len(u.sw.table) == 1
    u.now += 1.5
    u.sw.expire(u.now)
    assert len(u.sw.table) == 0
    assert u.sw.stats(u.now)["flows_expired"] == {"UDP": 1}


def test_a_checksum_of_zero_means_none_and_stays_zero() -> None:
    u = Udp()
    out = u.query(chksum=0)
    assert out is not None and out[UDP].chksum == 0 and udp_ok(out)
    back = u.answer(out, chksum=0)
    assert back is not None and back[UDP].chksum == 0 and udp_ok(back)


@settings(max_examples=300, deadline=None)
@given(sport=st.integers(1, 65535), payload=st.binary(max_size=64))
def test_every_rewritten_checksum_is_scapys(sport: int, payload: bytes) -> None:
    """(A sum that comes out 0 is sent as 0xffff: 0 would say "no checksum", RFC 768.)"""
    u = Udp()
    out = u.query(sport, payload)
    assert out is not None and out[UDP].chksum != 0 and udp_ok(out)
    back = u.answer(out, payload[::-1])
    assert back is not None and back[UDP].chksum != 0 and udp_ok(back)


@pytest.mark.parametrize(
    ("pkt", "reason"),
    [
        (IP(src=CLIENT, dst=VIP) / UDP(sport=40000, dport=53, len=7) / b"x", "udp_length"),
        (IP(src=CLIENT, dst=VIP) / UDP(sport=40000, dport=53, len=100) / b"x", "udp_length"),
        (
            IP(src=CLIENT, dst=VIP) / UDP(sport=40000, dport=53, chksum=0x1234) / b"x",
            "udp_checksum",
        ),
        (IP(src=CLIENT, dst=VIP) / UDP(sport=40000, dport=80) / b"x", "no_service"),
        (IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=53, flags="S"), "no_service"),
        (IP(src=VIP, dst=VIP) / UDP(sport=40000, dport=53) / b"x", "bad_source"),
    ],
)
def test_what_opens_no_udp_flow_is_dropped_with_its_reason(pkt: IP, reason: str) -> None:
    u = Udp()
    assert u.send(pkt) is None
    assert u.sw.dropped == {reason: 1}
    assert len(u.sw.table) == 0


def test_a_port_unreachable_from_the_backend_reaches_the_client_about_its_datagram() -> None:
    u = Udp()
    mine = IP(src=CLIENT, dst=VIP, id=9) / UDP(sport=40000, dport=53) / b"query"
    out = u.send(mine)
    assert out is not None
    err = IP(src=out.dst, dst=out.src) / ICMP(type=3, code=3) / Raw(bytes(out))
    back = u.send(err)
    assert back is not None and (back.src, back.dst) == (VIP, CLIENT)
    assert bytes(back)[28:] == bytes(mine)  # the client's datagram, checksum and all
    assert icmp_checksums_ok(back)
    assert u.sw.stats(u.now)["icmp_errors_translated"] == {"to_backend": 0, "to_client": 1}


def test_a_tcp_and_a_udp_service_share_a_vip_and_port() -> None:
    backends = [BackendState("A", BACKENDS["A"], 53)]
    tcp = ServiceState("dns-tcp", VIP, 53, make("rr"), backends)
    udp = ServiceState("dns", VIP, 53, make("rr"), [BackendState("B", BACKENDS["B"], 53)],
                       protocol="udp")  # fmt: skip
    sw = Switch([tcp, udp], snat=[SNAT], seed=1, snat_start=0, timeouts=dict(DEFAULT_TIMEOUTS))
    for pkt, to in (
        (IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=53, flags="S"), BACKENDS["A"]),
        (IP(src=CLIENT, dst=VIP) / UDP(sport=40000, dport=53) / b"q", BACKENDS["B"]),
    ):
        raw = bytes(pkt)
        sw.buf[: len(raw)] = raw
        assert sw.process(len(raw), T0)
        out = IP(bytes(sw.buf[: len(raw)]))
        assert out.dst == to and (checksums_ok(out) if TCP in out else udp_ok(out))
    assert sorted((r["service"], r["protocol"]) for r in sw.flows(T0)) == [
        ("dns", "udp"), ("dns-tcp", "tcp"),
    ]  # fmt: skip


def test_a_trace_shows_a_datagram_and_its_rewrite() -> None:
    u = Udp()
    sub = Subscription()
    u.sw.subscribe(sub)
    assert u.query() is not None
    u.sw.take_trace()
    (rec,) = sub.queue
    ev = event(rec, 1, MIN_SNAP, 0.0)
    assert ev["before"]["udp_len"] == ev["after"]["udp_len"] == 13
    assert set(ev["changed"]) == {"src", "sport", "dst", "dport", "ip_csum", "udp_csum"}
    text = trace_text(ev | {"time": 0.0})
    assert f"{CLIENT}:40000 > {VIP}:53 udp" in text
    assert f"{SNAT}*:1024* > {BACKENDS['A']}*:5353* udp" in text and " udp 0x" in text
    u.sw.unsubscribe(sub)
