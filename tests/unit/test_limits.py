"""Per-client limits (core/limits.py, native/clients.c): a client's flows and new flows per
second, per service, counted by C and refused with a named reason, and no other client
touched."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from test_switch import BACKENDS, SNAT, VIP

from pktswitch.control.config import parse
from pktswitch.core.limits import ClientLimits
from pktswitch.core.service import ServiceState
from pktswitch.core.switch import CLIENT_SWEEP, CLIENT_SWEEP_SLICES, Switch
from pktswitch.core.tcpstate import DEFAULT_TIMEOUTS, State
from pktswitch.sched.pool import BackendState
from pktswitch.sched.registry import make

GREEDY, OTHER = "198.51.100.2", "198.51.100.77"
T0 = 1000.0


def switch(limits: ClientLimits | None, **kw: object) -> Switch:
    backends = [BackendState(n, ip, 8080) for n, ip in BACKENDS.items()]
    svc = ServiceState("web", VIP, 80, make("rr"), backends, per_client=limits)
    timeouts = dict(DEFAULT_TIMEOUTS)
    timeouts.update(kw.pop("timeouts", {}))  # type: ignore[call-overload]
    return Switch([svc], snat=[SNAT], seed=3, snat_start=0, timeouts=timeouts, **kw)  # type: ignore[arg-type]


def send(sw: Switch, pkt: IP, now: float) -> IP | None:
    raw = bytes(pkt)
    sw.buf[: len(raw)] = raw
    return IP(bytes(sw.buf[: len(raw)])) if sw.process(len(raw), now) else None


def syn(sw: Switch, src: str, sport: int, now: float = T0) -> bool:
    return send(sw, IP(src=src, dst=VIP) / TCP(sport=sport, dport=80, flags="S"), now) is not None


def limited(sw: Switch, now: float = T0) -> dict[str, int]:
    return sw.stats(now)["client_limited"]["web"]  # type: ignore[no-any-return]


def test_a_client_holds_at_most_max_flows_and_others_are_untouched() -> None:
    sw = switch(ClientLimits(max_flows=2))
    assert [syn(sw, GREEDY, p) for p in (1, 2, 3, 4)] == [True, True, False, False]
    assert [syn(sw, OTHER, p) for p in (1, 2, 3)] == [True, True, False]
    s = sw.stats(T0)
    assert (s["dropped"], limited(sw), s["flows"]) == (
        {"client_max_flows": 3},
        {"client_max_flows": 3},
        4,
    )
    assert s["clients_tracked"] == 2


def test_a_flow_that_ends_gives_its_client_room_again() -> None:
    sw = switch(ClientLimits(max_flows=1), timeouts={State.SYN_RECV: 5.0})
    assert syn(sw, GREEDY, 1) and not syn(sw, GREEDY, 2)
    assert sw.expire(T0 + 5) == 1
    assert syn(sw, GREEDY, 2, T0 + 5)
    assert not syn(sw, GREEDY, 3, T0 + 5)


def test_a_finished_flow_is_not_counted() -> None:
    """TIME_WAIT and CLOSE flows hold a table slot, not a client's share (HAProxy's conn_cur
    counts open connections): a client making short connections is not locked out."""
    sw = switch(ClientLimits(max_flows=1), timeouts={State.TIME_WAIT: 60.0})
    assert syn(sw, GREEDY, 1)
    first = next(iter(sw.table))
    sw.table.set_state(first, State.TIME_WAIT, T0)
    assert syn(sw, GREEDY, 2) and not syn(sw, GREEDY, 3)
    sw.table.set_state(first, State.CLOSE, T0)  # closing still
    assert not syn(sw, GREEDY, 3)
    sw.table.set_state(first, State.TIME_WAIT, T0)
    sw.table.remove(first)  # an uncounted flow's end changes no count
    assert not syn(sw, GREEDY, 3)
    assert limited(sw) == {"client_max_flows": 3}


def test_new_flows_per_second_with_a_burst() -> None:
    sw = switch(ClientLimits(new_flows_per_second=2, burst=3))
    assert [syn(sw, GREEDY, p) for p in (1, 2, 3, 4)] == [True, True, True, False]
    assert syn(sw, OTHER, 1)  # its own bucket
    # one new flow every half second after the burst: exactly at 0.5 s, not before
    assert not syn(sw, GREEDY, 5, T0 + 0.499)
    assert syn(sw, GREEDY, 6, T0 + 0.5)
    assert not syn(sw, GREEDY, 7, T0 + 0.5)
    assert [syn(sw, GREEDY, p, T0 + 10) for p in (8, 9, 10, 11)] == [True, True, True, False]
    assert limited(sw, T0 + 10) == {"client_rate": 4}


def test_a_prefix_counts_its_addresses_as_one_client() -> None:
    sw = switch(ClientLimits(max_flows=2, prefix=24))
    assert [syn(sw, f"198.51.100.{i}", 1) for i in (2, 3, 4)] == [True, True, False]
    assert syn(sw, "192.0.2.200", 1)  # another /24
    assert sw.stats(T0)["clients_tracked"] == 2


def test_a_syn_reusing_its_clients_port_is_not_counted_twice() -> None:
    sw = switch(ClientLimits(max_flows=1), timeouts={State.TIME_WAIT: 60.0})
    out = send(sw, IP(src=GREEDY, dst=VIP) / TCP(sport=1, dport=80, flags="S", seq=10), T0)
    assert out is not None
    sw.table.set_state(next(iter(sw.table)), State.TIME_WAIT, T0)
    again = IP(src=GREEDY, dst=VIP) / TCP(sport=1, dport=80, flags="S", seq=99999)
    assert send(sw, again, T0 + 1) is not None  # the TIME_WAIT flow ends, the new one opens
    s = sw.stats(T0 + 1)
    assert (s["flows"], s["flows_reused"], s["dropped"]) == (1, 1, {})
    assert not syn(sw, GREEDY, 2, T0 + 1)


def test_evicted_flows_leave_their_clients_counts() -> None:
    sw = switch(ClientLimits(max_flows=3), max_flows=100, max_half_open=2)
    for p in (1, 2, 3):
        assert syn(sw, GREEDY, p, T0 + p)  # beyond 2 half-open: the oldest goes
    assert (sw.flows_evicted, len(sw.table)) == (1, 2)
    assert syn(sw, GREEDY, 4, T0 + 4)  # 2 flows counted (3 is the limit): one more
    assert sw.flows_evicted == 2 and not sw.stats(T0 + 4)["dropped"]


def test_reclaimed_flows_leave_their_clients_counts() -> None:
    sw = switch(ClientLimits(max_flows=3), snat_ports=(2000, 2000))  # one pair a backend
    assert [syn(sw, GREEDY, p, T0 + p) for p in (1, 2, 3)] == [True, True, True]  # A, B, C
    assert syn(sw, OTHER, 1, T0 + 4)  # A: takes GREEDY's first flow's pair
    assert sw.flows_reclaimed == {"SYN_RECV": 1}
    assert syn(sw, GREEDY, 4, T0 + 5)  # B: its second flow's pair; GREEDY holds 2 still
    assert syn(sw, GREEDY, 5, T0 + 6)  # C: its third's
    assert syn(sw, GREEDY, 6, T0 + 7)  # A: OTHER's flow's pair; GREEDY holds 3 now
    assert not syn(sw, GREEDY, 7, T0 + 8)
    assert sw.flows_reclaimed == {"SYN_RECV": 4}
    assert sw.stats(T0 + 8)["dropped"] == {"client_max_flows": 1}


def test_idle_clients_are_swept_and_the_count_shows_it() -> None:
    sw = switch(ClientLimits(max_flows=5, new_flows_per_second=1), timeouts={State.SYN_RECV: 5})
    for i in range(2, 12):
        assert syn(sw, f"198.51.100.{i}", 1)
    assert sw.stats(T0)["clients_tracked"] == 10
    assert sw.expire(T0 + 5) == 10  # their flows are gone, each bucket full again at T0 + 1
    now = T0 + 5
    for _ in range(CLIENT_SWEEP_SLICES):  # a slice of the table a round
        now += CLIENT_SWEEP
        sw.expire(now)
    assert sw.stats(now)["clients_tracked"] == 0


def test_a_reload_sets_changes_and_removes_the_limits() -> None:
    text = (
        f'[switch]\nsnat = ["{SNAT}"]\ncontrol = "/tmp/x.sock"\n'
        f'[[service]]\nname = "web"\nvip = "{VIP}:80"\n'
        '[[service.backend]]\nname = "A"\naddress = "192.0.2.1:80"\n'
    )
    sw = Switch.from_config(parse(text), seed=1)
    assert [syn(sw, GREEDY, p) for p in (1, 2)] == [True, True]
    limits = "[service.per_client]\nmax_flows = 3\n"
    assert sw.reconfigure(parse(text + limits), T0) == ["web: per-client limits changed"]
    # the flows open before the limit are not counted: 3 more
    assert [syn(sw, GREEDY, p) for p in (3, 4, 5, 6)] == [True, True, True, False]
    assert sw.reconfigure(parse(text), T0) == ["web: per-client limits changed"]
    assert syn(sw, GREEDY, 7)
    assert sw.stats(T0)["client_limited"] == {}
