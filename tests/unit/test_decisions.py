"""C decides on every new flow it can: it opens it, or drops its packet with the reason
Python's path would give; what it leaves to Python is counted by a named reason.

Each test makes Python's own new-flow path fail loudly, so a test passes only when C took
the decision itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, TCP
from test_switch import CLIENT, SNAT, VIP, Harness, service

from pktswitch.core.acl import Acl
from pktswitch.core.switch import Switch
from pktswitch.core.tcpstate import State


@pytest.fixture
def c_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(self: Switch, now: float) -> bool:
        raise AssertionError("Python's new-flow path was taken")

    monkeypatch.setattr(Switch, "_new_flow", refuse)
    yield


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
    ],
)
def test_c_drops_what_opens_no_flow_with_its_reason(c_only: None, pkt: IP, reason: str) -> None:
    h = Harness()
    assert h.send(pkt) is None
    assert stats(h) == ({reason: 1}, {}, 0, 0)


def test_c_refuses_a_client_the_access_list_denies(c_only: None) -> None:
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


def test_c_refuses_a_syn_no_backend_takes(c_only: None) -> None:
    h = Harness(names="AB")
    for name in "AB":
        h.sw.set_weight("web", name, 0, h.now)
    assert h.client("S", sport=1) is None
    assert stats(h) == ({"no_backend": 1}, {}, 0, 0)
    h.sw.set_weight("web", "B", 1, h.now)
    out = h.client("S", sport=2)
    assert out is not None and out.dst == "192.0.2.2"
    assert stats(h) == ({"no_backend": 1}, {}, 1, 1)


def test_c_counts_an_exhausted_snat_pool(c_only: None) -> None:
    h = Harness(names="A", snat_ports=(2000, 2001))
    assert [h.client("S", sport=p) is not None for p in (1, 2, 3)] == [True, True, False]
    assert stats(h) == ({"snat_exhausted": 1}, {}, 2, 2)
    assert h.sw.stats(h.now)["snat_exhausted"] == 1


def test_c_evicts_as_many_half_open_flows_as_a_lowered_limit_needs(c_only: None) -> None:
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


def test_c_opens_a_reused_port_when_the_table_is_full(c_only: None) -> None:
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


def test_what_c_leaves_to_python_is_counted_by_reason() -> None:
    h = Harness(scheduler="lrt")
    assert h.client("S", sport=1) is not None  # lrt: Python schedules it
    s = h.sw.stats(h.now)
    assert (s["to_python"], s["flows_opened_in_c"], s["flows_created"]) == (
        {"python_schedules": 1},
        0,
        1,
    )
