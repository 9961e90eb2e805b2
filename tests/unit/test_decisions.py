"""C decides on every new flow: it opens it, or drops its packet with a named reason; what
it leaves to Python (no new flow) is counted by a named reason too."""

from __future__ import annotations

import pytest
from pktswitch._native import lib
from scapy.layers.inet import ICMP, IP, TCP
from test_switch import CLIENT, SNAT, VIP, Harness, service

from pktswitch.core.acl import Acl
from pktswitch.core.switch import Switch
from pktswitch.core.tcpstate import State


def stats(h: Harness) -> tuple[dict[str, int], dict[str, int], int, int]:
    s = h.sw.stats(h.now)
    return s["dropped"], s["to_python"], s["flows_opened_in_c"], s["flows"]


@pytest.mark.parametrize(
    ("pkt", "reason"),
    [
        (IP(src=CLIENT, dst=VIP) / TCP(sport=1, dport=80, flags="A"), "no_flow"),
        (IP(src=CLIENT, dst=VIP) / TCP(sport=1, dport=80, flags="SA"), "no_flow"),
        (IP(src=CLIENT, dst=VIP) / TCP(sport=1, dport=80, flags="R"), "no_flow"),
        (IP(src=CLIENT, dst=VIP) / TCP(sport=1, dport=81, flags="S"), "no_service"),
        (IP(src=CLIENT, dst="203.0.113.99") / TCP(sport=1, dport=80, flags="S"), "no_service"),
        (IP(src=VIP, dst=VIP) / TCP(sport=1, dport=80, flags="S"), "bad_source"),
        (IP(src=SNAT, dst=VIP) / TCP(sport=1, dport=80, flags="S"), "bad_source"),
        (IP(src="127.0.0.1", dst=VIP) / TCP(sport=1, dport=80, flags="S"), "bad_source"),
        (IP(src="0.1.2.3", dst=VIP) / TCP(sport=1, dport=80, flags="S"), "bad_source"),
        (IP(src="224.0.0.5", dst=VIP) / TCP(sport=1, dport=80, flags="S"), "bad_source"),
        (IP(src="240.0.0.1", dst=VIP) / TCP(sport=1, dport=80, flags="S"), "bad_source"),
        (IP(src="255.255.255.255", dst=VIP) / TCP(sport=1, dport=80, flags="S"), "bad_source"),
        (
            IP(src=CLIENT, dst=VIP) / TCP(sport=1, dport=80, flags="S", chksum=0x1234),
            "tcp_checksum",
        ),
    ],
)
def test_c_drops_what_opens_no_flow_with_its_reason(pkt: IP, reason: str) -> None:
    h = Harness()
    assert h.send(pkt) is None
    assert stats(h) == ({reason: 1}, {}, 0, 0)


def test_c_refuses_a_client_the_access_list_denies() -> None:
    svc = service()
    svc.acl = Acl(allow=("198.51.100.0/24",), deny=("198.51.100.7/32",)).compile()
    sw = Switch([svc], snat=[SNAT], seed=1, snat_start=0)
    for src in ("198.51.100.7", "192.0.2.200", "198.51.100.2"):
        syn = bytes(IP(src=src, dst=VIP) / TCP(sport=5000, dport=80, flags="S"))
        sw.buf[: len(syn)] = syn
        assert sw.process(len(syn), 1.0) is (src == "198.51.100.2")
    s = sw.stats(1.0)
    assert (s["dropped"], s["acl_denied"], s["to_python"]) == ({"acl_denied": 2}, {"web": 2}, {})
    assert s["flows_opened_in_c"] == 1


def test_c_refuses_a_syn_no_backend_takes() -> None:
    h = Harness(names="AB")
    for name in "AB":
        h.sw.set_weight("web", name, 0, h.now)
    assert h.client("S", sport=1) is None
    assert stats(h) == ({"no_backend": 1}, {}, 0, 0)
    h.sw.set_weight("web", "B", 1, h.now)
    out = h.client("S", sport=2)
    assert out is not None and out.dst == "192.0.2.2"
    assert stats(h) == ({"no_backend": 1}, {}, 1, 1)


def test_c_counts_an_exhausted_snat_pool() -> None:
    h = Harness(names="A", snat_ports=(2000, 2001))
    for sport in (1, 2):  # every pair held by an established flow: none to reclaim
        h.handshake(sport)
    assert h.client("S", sport=3) is None
    assert stats(h) == ({"snat_exhausted": 1}, {}, 2, 2)
    assert h.sw.stats(h.now)["snat_exhausted"] == 1


def test_c_evicts_as_many_half_open_flows_as_a_lowered_limit_needs() -> None:
    h = Harness(max_flows=10, max_half_open=5)
    for sport in range(1, 6):
        assert h.client("S", sport=sport) is not None
    h.sw.table.max_half_open = 2  # what a reload does
    assert h.client("S", sport=6) is not None
    ports = sorted(r["client"] for r in h.sw.flows(h.now))
    assert ports == [f"{CLIENT}:5", f"{CLIENT}:6"]
    assert (h.sw.flows_evicted, h.sw.table.half_open) == (4, 2)
    assert stats(h) == ({}, {}, 6, 2)
    assert sum(b["inactive"] for b in h.sw.backends(h.now)) == 2


def test_c_opens_a_reused_port_when_the_table_is_full() -> None:
    h = Harness(max_flows=2, timeouts={State.TIME_WAIT: 60})
    syn = h.handshake(sport=1)
    h.handshake(sport=2)
    assert h.client("FA", sport=1, seq=101, ack=501) is not None
    assert h.backend(syn, "FA", seq=501, ack=102) is not None
    assert h.client("A", sport=1, seq=102, ack=502) is not None
    assert h.flow(1)["state"] == "TIME_WAIT"
    again = h.client("S", sport=1, seq=9000)
    assert again is not None and again.dst == "192.0.2.3"  # rr's next turn: C
    assert h.flow(1)["state"] == "SYN_RECV"
    assert (h.sw.flows_reused, h.sw.flows_expired) == (1, {"TIME_WAIT": 1})
    assert stats(h) == ({}, {}, 3, 2)


def test_c_decides_a_syn_again_an_rst_and_a_ping_itself() -> None:
    h = Harness()
    syn = h.client("S", sport=1, seq=100)
    assert syn is not None
    assert h.client("S", sport=1, seq=100) is not None  # the SYN again: counted, forwarded
    assert h.flow(1)["state"] == "SYN_RECV"
    (flow,) = h.sw.table
    assert h.sw.table.native(flow).syns == 2  # (Karn: its SYN-ACK times no handshake)
    assert h.backend(syn, "RA", seq=0, ack=101) is not None  # the backend refuses
    assert h.flow(1)["state"] == "CLOSE"
    ping = IP(src=CLIENT, dst=VIP) / ICMP(type=8, id=1, seq=1)
    assert h.send(ping) is not None  # an echo request: C answers it
    s = h.sw.stats(h.now)
    assert s["to_python"] == {}
    assert (s["icmp_echo_replies"], s["flows_opened_in_c"], s["flows_created"]) == (1, 1, 1)


def test_a_switch_that_cannot_run_a_program_says_why() -> None:
    svc = service("A")
    svc.backends = svc.backends * (lib.PKS_MEMBERS_MAX + 1)
    with pytest.raises(ValueError, match="at most 65536"):
        Switch([svc], snat=[SNAT], seed=1, snat_start=0)


def test_a_packet_c_has_no_event_room_for_goes_through_c_again_once_python_took_them() -> None:
    h = Harness(max_flows=4096, max_half_open=4096)  # no eviction: every flow stays
    tab, sw = h.sw.table.tab, h.sw
    sport = 0
    while lib.PKS_EVENTS - tab.ev_count >= lib.PKS_EV_OPEN_ROOM:  # C opens, no one takes
        sport += 1
        raw = bytes(IP(src=CLIENT, dst=VIP) / TCP(sport=sport, dport=80, flags="S"))
        sw.buf[: len(raw)] = raw
        assert lib.pks_process(tab, sw.bufp, len(raw), h.now, sw.meta, 0) == lib.PKS_V_FAST
    out = h.client("S", sport=sport + 1)  # no room to tell: Python takes the events, C opens
    assert out is not None and tab.ev_count == 0
    s = sw.stats(h.now)
    assert s["to_python"] == {"event_ring_full": 1}
    assert s["flows_opened_in_c"] == s["flows_created"] == s["flows"] == sport + 1
    # a known flow's packet with the ring full again: counted once, when C takes it again
    while lib.PKS_EVENTS - tab.ev_count >= 3:
        sport += 2
        raw = bytes(IP(src=CLIENT, dst=VIP) / TCP(sport=sport, dport=80, flags="S"))
        sw.buf[: len(raw)] = raw
        assert lib.pks_process(tab, sw.bufp, len(raw), h.now, sw.meta, 0) == lib.PKS_V_FAST
    assert h.client("A", sport=1, seq=1, ack=1) is not None
    assert sw.stats(h.now)["to_python"] == {"event_ring_full": 2}
    assert (h.flow(1)["packets_in"], h.flow(1)["packets_out"]) == (2, 0)
