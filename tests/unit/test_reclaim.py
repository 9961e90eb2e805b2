"""A backend's SNAT pairs all in use: a new flow takes the pair of the oldest flow toward it
that has finished (TIME_WAIT, CLOSE), else of the oldest half-open one (native/open.c,
reclaim_from), and is refused only when established flows hold every pair."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from test_switch import CLIENT, SNAT, VIP, Harness

from pktswitch.core.tcpstate import State

LONG = {State.SYN_RECV: 300.0, State.TIME_WAIT: 300.0}  # nothing expires during a test


def two_pairs() -> Harness:
    return Harness(names="A", snat_ports=(2000, 2001), timeouts=LONG)


def ports(h: Harness) -> dict[int, str]:
    """Each flow's client port -> its SNAT pair"""
    return {int(str(r["client"]).rsplit(":")[1]): str(r["snat"]) for r in h.sw.flows(h.now)}


def close(h: Harness, syn: IP, sport: int) -> None:
    """The client closes first: its flow goes to TIME_WAIT (seq/ack as h.handshake left them)"""
    assert h.client("FA", sport, seq=101, ack=501) is not None
    assert h.backend(syn, "FA", seq=501, ack=102) is not None
    assert h.client("A", sport, seq=102, ack=502) is not None
    assert h.flow(sport)["state"] == "TIME_WAIT"


def test_a_syn_takes_the_pair_of_the_oldest_half_open_flow() -> None:
    h = two_pairs()
    assert h.client("S", sport=1) is not None
    h.now += 1
    assert h.client("S", sport=2) is not None
    h.now += 1
    out = h.client("S", sport=3, seq=7)
    assert out is not None and (out.src, out[TCP].sport) == (SNAT, 2000)  # sport 1's pair
    assert ports(h) == {2: f"{SNAT}:2001", 3: f"{SNAT}:2000"}
    s = h.sw.stats(h.now)
    assert (s["flows_reclaimed"], s["flows_evicted"], s["snat_exhausted"]) == (
        {"SYN_RECV": 1},
        0,
        0,
    )
    assert s["snat_early_reuse"] == 1  # sport 1's SYN came 2 s before: the backend may hold it
    # the backend's answer on that pair reaches the new client, not the old one
    back = h.backend(out, "SA", seq=900, ack=8)
    assert back is not None and (back.dst, back[TCP].dport, back[TCP].ack) == (CLIENT, 3, 8)
    assert h.client("A", sport=1, seq=1, ack=1) is None  # sport 1's flow is gone
    assert h.sw.last_drop == "no_flow"
    assert sum(b["inactive"] for b in h.sw.backends(h.now)) == 2


def test_a_finished_flow_gives_its_pair_before_an_older_half_open_one() -> None:
    h = two_pairs()
    assert h.client("S", sport=1) is not None  # half-open, the oldest flow
    h.now += 1
    syn = h.handshake(sport=2)
    close(h, syn, 2)
    h.now += 61  # past a backend's TIME_WAIT since sport 2's last packet
    out = h.client("S", sport=3)
    assert out is not None and out[TCP].sport == syn[TCP].sport
    assert set(ports(h)) == {1, 3}
    s = h.sw.stats(h.now)
    assert (s["flows_reclaimed"], s["snat_early_reuse"], s["flows_expired"]) == (
        {"TIME_WAIT": 1},
        0,
        {},
    )


def test_a_pair_taken_within_a_backends_time_wait_counts_as_early() -> None:
    h = two_pairs()
    h.handshake(sport=1)
    syn = h.handshake(sport=2)
    close(h, syn, 2)
    h.now += 5
    assert h.client("S", sport=3) is not None
    s = h.sw.stats(h.now)
    assert (s["flows_reclaimed"], s["snat_early_reuse"]) == ({"TIME_WAIT": 1}, 1)


def test_a_reused_port_takes_its_own_flows_pair() -> None:
    h = Harness(names="A", snat_ports=(2000, 2000), timeouts=LONG)
    syn = h.handshake(sport=1)
    close(h, syn, 1)
    h.now += 1
    out = h.client("S", sport=1, seq=5000)  # the same client port, a new connection
    assert out is not None and out[TCP].sport == 2000
    s = h.sw.stats(h.now)
    assert (s["flows_reused"], s["flows_reclaimed"], s["flows"]) == (1, {}, 1)
    assert h.flow(1)["state"] == "SYN_RECV"


def test_established_flows_keep_their_pairs() -> None:
    h = two_pairs()
    h.handshake(sport=1)
    assert h.client("S", sport=2) is not None
    h.now += 1
    assert h.client("S", sport=3) is not None  # takes sport 2's pair
    assert h.client("S", sport=4) is not None  # and then sport 3's
    assert set(ports(h)) == {1, 4}
    assert h.sw.stats(h.now)["flows_reclaimed"] == {"SYN_RECV": 2}
    assert h.send(IP(src=CLIENT, dst=VIP) / TCP(sport=3, dport=80, flags="A")) is None
