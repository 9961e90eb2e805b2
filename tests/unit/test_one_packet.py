"""One-packet scheduling (`one_packet = true`, IPVS's -o): every datagram of a client socket
is scheduled on its own; its flow is keyed by the answer only and ends once each datagram
it carried was answered (native/open.c, process.c)."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP
from test_switch import BACKENDS, CLIENT, SNAT, VIP, push
from test_udp import UDP_TIMEOUT, Udp, udp_ok

from pktswitch.control.config import parse
from pktswitch.core.service import ServiceState
from pktswitch.core.switch import Switch
from pktswitch.sched.pool import BackendState
from pktswitch.sched.registry import SCHEDULERS, make


@pytest.mark.parametrize("mode", ["fullnat", "nat"])
def test_one_sockets_datagrams_spread_and_each_answer_ends_its_flow(mode: str) -> None:
    u = Udp(mode, one_packet=True)
    outs = [u.query(40000, payload=b"q%d" % i) for i in range(6)]
    assert all(o is not None and udp_ok(o) for o in outs)
    by_ip = {ip: n for n, ip in BACKENDS.items()}
    assert [by_ip[o.dst] for o in outs if o] == ["A", "B", "C", "A", "B", "C"]
    rows = u.sw.flows(u.now)
    assert {r["client"] for r in rows} == {f"{CLIENT}:40000"}
    if mode == "fullnat":  # each datagram its own flow and SNAT pair, until its answer
        flows = 6
        assert len({(r["backend"], r["snat"]) for r in rows}) == 6
    else:  # nat: a backend's answers carry one key, so its flow takes both datagrams
        flows = 3
        assert sorted((r["backend"], r["packets_in"]) for r in rows) == [
            ("A", 2), ("B", 2), ("C", 2),
        ]  # fmt: skip
    assert len(rows) == flows
    for i, out in enumerate(outs):
        assert out is not None
        back = u.answer(out, payload=b"a%d" % i)
        assert back is not None and udp_ok(back)
        assert (back.src, back[UDP].sport, back.dst, back[UDP].dport) == (VIP, 53, CLIENT, 40000)
        assert bytes(back[UDP].payload) == b"a%d" % i
    assert u.sw.flows(u.now) == []
    s = u.sw.stats(u.now)
    assert (s["flows_created"], s["flows_answered"], s["flows_expired"]) == (flows, flows, {})
    if mode == "fullnat":
        assert s["snat_in_use"] == {SNAT: 0}
    # an answer once the flow has ended is no flow's
    assert outs[0] is not None and u.answer(outs[0]) is None
    assert u.sw.stats(u.now)["dropped"] == {"no_service": 1}  # (a datagram to no UDP service)


def test_datagrams_to_the_same_backend_share_a_flow_until_both_are_answered() -> None:
    u = Udp("nat", names="A", one_packet=True)
    first, second = u.query(40000, payload=b"q1"), u.query(40000, payload=b"q2")
    assert first is not None and second is not None
    (row,) = u.sw.flows(u.now)  # nat: the answer's key is the same, so one flow takes both
    assert (row["packets_in"], row["packets_out"]) == (2, 0)
    assert u.answer(first) is not None
    (row,) = u.sw.flows(u.now)
    assert (row["packets_in"], row["packets_out"]) == (2, 1)
    assert u.answer(second) is not None
    assert u.sw.flows(u.now) == []
    s = u.sw.stats(u.now)
    assert (s["flows_created"], s["flows_answered"]) == (1, 1)


def test_an_unanswered_datagrams_flow_idles_out_after_udp_timeout() -> None:
    u = Udp(one_packet=True)
    out = u.query()
    assert out is not None
    u.now += UDP_TIMEOUT - 1
    u.sw.expire(u.now)
    assert len(u.sw.flows(u.now)) == 1
    u.now += 1.5
    u.sw.expire(u.now)
    assert u.sw.flows(u.now) == []
    s = u.sw.stats(u.now)
    assert (s["flows_expired"], s["flows_answered"], s["snat_in_use"]) == ({"UDP": 1}, 0, {SNAT: 0})


def test_without_one_packet_a_socket_keeps_its_backend() -> None:
    u = Udp()
    outs = [u.query(40000) for _ in range(3)]
    assert {o.dst for o in outs if o} == {BACKENDS["A"]}
    assert u.answer(outs[0]) is not None  # type: ignore[arg-type]
    assert len(u.sw.flows(u.now)) == 1  # an answer ends nothing
    assert u.sw.stats(u.now)["flows_answered"] == 0


def test_one_packet_is_for_udp_services_only() -> None:
    u = Udp(one_packet=True)
    svc = u.sw.services[0]
    assert isinstance(svc, ServiceState) and svc.ahead is not None
    with pytest.raises(ValueError, match="one-packet"):
        svc.ahead.write_transport("tcp", 300.0, True)
    pkt = IP(src=CLIENT, dst=VIP) / UDP(sport=40001, dport=53) / b"q"
    assert u.send(pkt) is not None  # the service runs on as it was


def test_a_reload_turns_one_packet_on_for_the_next_datagrams() -> None:
    text = (
        '[switch]\nmode = "nat"\n[[service]]\nname = "dns"\nvip = "203.0.113.10:53"\n'
        'protocol = "udp"\n{extra}[[service.backend]]\nname = "A"\naddress = "192.0.2.1:53"\n'
        '[[service.backend]]\nname = "B"\naddress = "192.0.2.2:53"\n'
    )
    sw = Switch.from_config(parse(text.format(extra="")), seed=1)
    pkt = IP(src=CLIENT, dst=VIP) / UDP(sport=40000, dport=53) / b"q"
    assert [push(sw, pkt, 1.0).dst for _ in range(2)] == [BACKENDS["A"]] * 2  # type: ignore[union-attr]
    assert sw.reconfigure(parse(text.format(extra="one_packet = true\n")), 1.0) == [
        "dns: one_packet False -> True"
    ]
    # the socket's flow stays as it was (keyed both ways); a new socket's datagrams spread
    other = IP(src=CLIENT, dst=VIP) / UDP(sport=40001, dport=53) / b"q"
    assert [push(sw, other, 1.0).dst for _ in range(2)] == [BACKENDS["B"], BACKENDS["A"]]  # type: ignore[union-attr]


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_picks_for_udp_as_it_does_for_tcp(name: str) -> None:
    """The same new clients, as SYNs to a TCP service and as datagrams to a UDP one, in two
    switches alike: C picks the same backends (its TCP picks are checked against the Python
    schedulers elsewhere). The loads differ by design (a UDP flow is never ESTABLISHED), so
    lc, wlc and lrt see every flow alike here: none answered."""
    weights = {"A": 3, "B": 1, "C": 2}
    picks = {}
    for proto in ("tcp", "udp"):
        backends = [BackendState(n, BACKENDS[n], 53, w) for n, w in weights.items()]
        svc = ServiceState("s", VIP, 53, make(name), backends, protocol=proto)
        sw = Switch([svc], snat=[SNAT], seed=1, hash_secret=b"k")
        l4 = (lambda s: TCP(sport=s, dport=53, flags="S")) if proto == "tcp" else (
            lambda s: UDP(sport=s, dport=53)
        )  # fmt: skip
        got = []
        for i in range(30):
            out = push(sw, IP(src=f"198.51.100.{i % 7 + 2}", dst=VIP) / l4(40000 + i), 1.0)
            assert out is not None
            got.append(out.dst)
        picks[proto] = got
    assert picks["udp"] == picks["tcp"]
    # (lrt: nothing measured, every score 0, ties to the first member)
    assert len(set(picks["udp"])) == 1 if name == "lrt" else len(set(picks["udp"])) >= 2
