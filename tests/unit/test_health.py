"""Health: the rules (rise/fall, ejection, slow start, drain) and their effect on the switch."""

from __future__ import annotations

import errno
import selectors
import socket
import types

import pytest
from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

from pktswitch.core.switch import ServiceState, Switch
from pktswitch.sched import health_policy as health
from pktswitch.sched.health_policy import HealthPolicy
from pktswitch.sched.pool import BackendState
from pktswitch.sched.registry import make

POLICY = HealthPolicy(rise=2, fall=3, eject=5, eject_max=20, syn_timeout=1.0, slow_start=10)
VIP, CLIENT, SNAT = "203.0.113.10", "198.51.100.2", "203.0.113.1"


def test_fall_then_rise() -> None:
    b = BackendState("B", "192.0.2.2", 80)
    assert health.check_result(b, False, POLICY, 1.0, "refused") == ""
    assert health.check_result(b, False, POLICY, 2.0, "refused") == ""
    assert (
        health.check_result(b, False, POLICY, 3.0, "refused") == "down: 3 checks failed (refused)"
    )
    assert health.effective_weight(b, POLICY, 3.0) == 0
    assert health.check_result(b, True, POLICY, 4.0, "ok") == ""
    assert health.check_result(b, True, POLICY, 5.0, "ok") == "up: 2 checks passed"
    assert (health.state_name(b, POLICY, 5.0), b.health_reason) == ("up", "up: 2 checks passed")


def test_passive_ejection_grows_and_is_capped() -> None:
    b = BackendState("B", "192.0.2.2", 80)
    assert health.passive_failure(b, POLICY, 0.0, "RST", 1) == "ejected for 5 s: RST"
    assert health.passive_failure(b, POLICY, 1.0, "RST", 1) == ""  # already out
    assert (
        health.state_name(b, POLICY, 4.9) == "ejected"
        and health.effective_weight(b, POLICY, 4.9) == 0
    )
    assert health.passive_failure(b, POLICY, 5.0, "RST", 1) == "ejected for 10 s: RST"
    assert health.passive_failure(b, POLICY, 15.0, "RST", 1) == "ejected for 20 s: RST"
    assert health.passive_failure(b, POLICY, 35.0, "RST", 1) == "ejected for 20 s: RST"  # the cap
    health.check_result(b, True, POLICY, 60.0, "ok")  # a success resets the doubling
    assert health.passive_failure(b, POLICY, 61.0, "RST", 1) == "ejected for 5 s: RST"


def test_the_last_backend_taking_flows_is_not_ejected() -> None:
    b = BackendState("B", "192.0.2.2", 80)
    told = health.passive_failure(b, POLICY, 0.0, "RST", 0)
    assert told == "not ejected (RST): no other backend takes new flows"
    assert health.effective_weight(b, POLICY, 0.0) == 1 and b.ejections == 0
    assert health.passive_failure(b, POLICY, 0.0, "RST", 1) == "ejected for 5 s: RST"


def test_slow_start_ramps_the_weight() -> None:
    b = BackendState("B", "192.0.2.2", 80, weight=10)
    for _ in range(3):
        health.check_result(b, False, POLICY, 0.0, "x")
    health.check_result(b, True, POLICY, 100.0, "ok")
    health.check_result(b, True, POLICY, 100.0, "ok")  # up at 100
    weights = [health.effective_weight(b, POLICY, 100.0 + t) for t in (0, 1, 2.5, 5, 9.9, 10, 50)]
    assert weights == [1, 1, 3, 5, 10, 10, 10]
    assert health.state_name(b, POLICY, 102.5) == "slow-start"


def harness(on_down: str = "keep") -> Switch:
    pol = HealthPolicy(check="none", passive=True, syn_timeout=1.0, on_down=on_down)
    backends = [BackendState(n, f"192.0.2.{i}", 80) for i, n in enumerate("AB", 1)]
    svc = ServiceState("web", VIP, 80, make("rr"), backends, health=pol)
    return Switch([svc], snat=[SNAT], seed=1)


def send(sw: Switch, p: IP, now: float) -> IP | None:
    raw = bytes(p)
    sw.buf[: len(raw)] = raw
    return IP(bytes(sw.buf[: len(raw)])) if sw.process(len(raw), now) else None


def syn(sport: int) -> IP:
    return IP(src=CLIENT, dst=VIP) / TCP(sport=sport, dport=80, flags="S", seq=1000)


def test_rst_answering_a_syn_is_a_passive_signal() -> None:
    sw = harness()
    out = send(sw, syn(40000), 1.0)
    assert out is not None and out.dst == "192.0.2.1"
    rst = IP(src=out.dst, dst=out.src) / TCP(sport=80, dport=out[TCP].sport, flags="RA", ack=1001)
    send(sw, rst, 1.001)
    (event,) = sw.take_passive(1.002)
    assert (event[1].name, event[2]) == ("A", "RST in answer to a SYN")
    assert sw.take_passive(1.003) == []


def test_a_syn_without_syn_ack_is_a_passive_signal_once_its_time_is_up() -> None:
    sw = harness()
    answered = send(sw, syn(40000), 1.0)  # to A, answered below
    send(sw, syn(40001), 1.0)  # to B, never answered
    assert answered is not None
    synack = IP(src=answered.dst, dst=answered.src) / TCP(
        sport=80, dport=answered[TCP].sport, flags="SA", ack=1001
    )
    send(sw, synack, 1.01)
    assert sw.take_passive(1.99) == []
    (event,) = sw.take_passive(2.0)
    assert (event[1].name, event[2]) == ("B", "no SYN-ACK within 1 s")


def test_a_down_backend_gets_no_new_flows_and_shows_why() -> None:
    sw = harness()
    _, b = sw.backend("web", "B")
    for t in (1.0, 2.0, 3.0):
        health.check_result(b, False, HealthPolicy(fall=3), t, "connect refused")
    assert sw.refresh(3.0) == ["web/B: weight 1 -> 0 (down)"]
    dsts = {send(sw, syn(41000 + i), 4.0).dst for i in range(4)}  # type: ignore[union-attr]
    assert dsts == {"192.0.2.1"}
    row = next(r for r in sw.backends(4.0) if r["backend"] == "B")
    assert (row["health"], row["health_reason"]) == (
        "down",
        "down: 3 checks failed (connect refused)",
    )
    assert (row["weight"], row["config_weight"]) == (0, 1)


def test_reset_policy_sends_the_client_an_rst_it_will_accept() -> None:
    sw = harness(on_down="reset")
    out = send(sw, syn(40000), 1.0)
    assert out is not None
    back = IP(src=out.dst, dst=out.src) / TCP(
        sport=80, dport=out[TCP].sport, flags="SA", seq=5000, ack=1001
    )
    send(sw, back, 1.0)
    # the client acknowledges 5001, then sends a request: its next expected byte is 5001
    send(
        sw, IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="A", seq=1001, ack=5001), 1.0
    )
    req = IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=5001)
    send(sw, req / Raw(b"GET /"), 1.0)
    _, a = sw.backend("web", "A")
    (pkt,) = sw.reset_backend(a, 2.0)
    rst = IP(pkt)
    assert (rst.src, rst[TCP].sport, rst.dst, rst[TCP].dport) == (VIP, 80, CLIENT, 40000)
    assert rst[TCP].flags == "R" and rst[TCP].seq == 5001
    fresh = rst.copy()
    del fresh.chksum
    del fresh[TCP].chksum
    fresh = IP(bytes(fresh))
    assert (fresh.chksum, fresh[TCP].chksum) == (rst.chksum, rst[TCP].chksum)
    assert sw.flows(2.0) == [] and sw.stats(2.0)["flows_reset"] == 1
    assert (a.active, a.inactive) == (0, 0)


def test_drain_keeps_existing_flows_and_takes_no_new_ones() -> None:
    sw = harness()
    first = send(sw, syn(40000), 1.0)  # A
    assert first is not None and first.dst == "192.0.2.1"
    r = sw.set_drain("web", "A", True, 1.5)
    assert r == {"service": "web", "backend": "A", "draining": True, "flows": 1}
    dsts = {send(sw, syn(42000 + i), 2.0).dst for i in range(3)}  # type: ignore[union-attr]
    assert dsts == {"192.0.2.2"}
    again = send(sw, IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="A"), 2.0)
    assert again is not None and again.dst == "192.0.2.1"  # the old flow still goes to A
    row = next(r for r in sw.backends(2.0) if r["backend"] == "A")
    assert (row["health"], row["active"] + row["inactive"]) == ("draining", 1)


def test_reset_covers_data_the_client_has_not_acknowledged_yet() -> None:
    sw = harness(on_down="reset")
    out = send(sw, syn(40000), 1.0)
    assert out is not None
    t = out[TCP].sport
    send(
        sw,
        IP(src=out.dst, dst=out.src) / TCP(sport=80, dport=t, flags="SA", seq=5000, ack=1001),
        1.0,
    )
    send(
        sw, IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="A", seq=1001, ack=5001), 1.0
    )
    data = IP(src=out.dst, dst=out.src) / TCP(sport=80, dport=t, flags="PA", seq=5001, ack=1001)
    send(sw, data / Raw(b"x" * 100), 1.0)  # in flight: the client has not acknowledged it
    _, a = sw.backend("web", "A")
    seqs = [IP(p)[TCP].seq for p in sw.reset_backend(a, 2.0)]
    assert seqs == [5001, 5101]  # whichever the client expects, one of them is exact


def test_no_reset_for_a_client_that_never_acknowledged_anything() -> None:
    sw = harness(on_down="reset")
    out = send(sw, syn(40000), 1.0)
    assert out is not None
    refuse = IP(src=out.dst, dst=out.src) / TCP(
        sport=80, dport=out[TCP].sport, flags="RA", ack=1001
    )
    send(sw, refuse, 1.0)
    _, a = sw.backend("web", "A")
    assert sw.reset_backend(a, 2.0) == []
    assert sw.flows(2.0) == []


def test_slow_start_keeps_an_operator_weight_of_zero() -> None:
    b = BackendState("B", "192.0.2.2", 80, weight=0)
    b.up_since = 100.0
    assert health.effective_weight(b, POLICY, 101.0) == 0


def test_ejection_time_stays_capped_after_many_ejections() -> None:
    b = BackendState("B", "192.0.2.2", 80)
    b.ejections = 5000
    assert health.passive_failure(b, POLICY, 0.0, "RST", 1) == "ejected for 20 s: RST"


def test_the_monitor_forgets_backends_a_reload_removed() -> None:
    """What the health monitor keeps per backend (when its next check is due, a drain's
    flows left) goes with the backend at the next turn after a reload removed it, rather
    than keeping it for the switch's life. No checks here (check = "none": no probe leaves
    this host); the due time is set by hand as a check would set it."""
    from pktswitch.control.config import parse
    from pktswitch.control.health_checks import HealthMonitor

    def config(names: str) -> str:
        text = f'[switch]\nsnat = ["{SNAT}"]\ncontrol = "/tmp/x.sock"\n'
        text += f'[[service]]\nname = "web"\nvip = "{VIP}:80"\n'
        text += '[service.health]\ncheck = "none"\npassive = false\n'  # (A's SYN stays unanswered)
        for i, n in enumerate(names, 1):
            text += f'[[service.backend]]\nname = "{n}"\naddress = "192.0.2.{i}:80"\n'
        return text

    sw = Switch.from_config(parse(config("AB")), seed=1)
    loop = types.SimpleNamespace(idle=[], deadlines=[], sel=None)
    monitor = HealthMonitor(loop, sw, lambda: 2.0, lambda _p: None)  # type: ignore[arg-type]
    assert send(sw, syn(40000), 1.0) is not None  # a flow on A
    a, b = sw.services[0].backends
    sw.set_drain("web", "A", True, 1.5)
    monitor.next_check[b] = 5.0
    monitor.tick()
    assert (monitor.draining_left, monitor.next_check) == ({a: 1}, {b: 5.0})
    sw.reconfigure(parse(config("C")), 2.0)
    monitor.tick()
    assert (monitor.draining_left, monitor.next_check) == ({}, {})


def refused(_ip: str, _port: int) -> socket.socket:
    """A backend refusing the switch's check at once, as a connect() to a closed port."""
    raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")


def test_the_monitor_scans_now_and_then_but_takes_a_passive_signal_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A busy loop turns thousands of times a second: the monitor scans its backends
    (checks, weights, drains) at most every SCAN_EVERY seconds, and at once when a passive
    signal waits (its confirmation refused at once here)."""
    from pktswitch.control import health_checks
    from pktswitch.control.health_checks import SCAN_EVERY, HealthMonitor

    monkeypatch.setattr(health_checks, "connect_nonblocking", refused)

    sw = harness()
    now = [1.0]
    loop = types.SimpleNamespace(idle=[], deadlines=[], sel=None)
    monitor = HealthMonitor(loop, sw, lambda: now[0], lambda _p: None)  # type: ignore[arg-type]
    out = send(sw, syn(40000), 1.0)  # a flow on A
    assert out is not None and out.dst == "192.0.2.1"
    monitor.tick()  # a scan: nothing is draining
    sw.set_drain("web", "A", True, 1.0)
    now[0] = 1.0 + SCAN_EVERY / 2
    monitor.tick()  # too soon for a scan: the drain is not seen yet
    assert monitor.draining_left == {}
    now[0] = 1.0 + SCAN_EVERY
    monitor.tick()
    a, b = sw.services[0].backends
    assert monitor.draining_left == {a: 1}
    sw.set_drain("web", "A", False, now[0])  # A takes flows again: B is not the last one
    # B answers a new SYN with an RST: the next turn takes it, however soon
    out = send(sw, syn(40001), now[0])
    assert out is not None and out.dst == "192.0.2.2"
    rst = IP(src=out.dst, dst=out.src) / TCP(sport=80, dport=out[TCP].sport, flags="RA", ack=1001)
    send(sw, rst, now[0])
    now[0] += SCAN_EVERY / 10
    monitor.tick()
    assert b.ejected_until == now[0] + 5.0  # the harness policy's eject (the default)
    assert b.health_reason == (
        "ejected for 5 s: RST in answer to a SYN, and the switch's check failed "
        "(Connection refused)"
    )
    assert (monitor.signals, monitor.confirmed, monitor.unconfirmed) == (1, 1, 0)


def test_a_passive_signal_the_switch_s_own_check_contradicts_ejects_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client can make a backend refuse or ignore its SYN (one the backend drops); it
    cannot make the switch's own connect fail. B refuses two clients' SYNs: one confirming
    check starts (signals meanwhile wait on it), it connects, and B stays in."""
    from pktswitch.control import health_checks

    pairs: list[tuple[socket.socket, socket.socket]] = []

    def connects(_ip: str, _port: int) -> socket.socket:
        pairs.append(socket.socketpair())
        return pairs[-1][0]

    monkeypatch.setattr(health_checks, "connect_nonblocking", connects)
    sw = harness()
    with selectors.DefaultSelector() as sel:
        loop = types.SimpleNamespace(idle=[], deadlines=[], sel=sel)
        monitor = health_checks.HealthMonitor(loop, sw, lambda: 1.01, lambda _p: None)  # type: ignore[arg-type]
        for sport in (40000, 40002):  # rr: A, B, A, B: the second and fourth go to B
            send(sw, syn(sport), 1.0)
            out = send(sw, syn(sport + 1), 1.0)
            assert out is not None and out.dst == "192.0.2.2"
            t = out[TCP]
            send(
                sw,
                IP(src=out.dst, dst=out.src) / TCP(sport=80, dport=t.sport, flags="RA", ack=1001),
                1.0,
            )
        monitor.tick()
        (fd,) = monitor.inflight
        assert monitor.inflight[fd].backend.name == "B" and monitor.inflight[fd].confirms
        monitor._ready(fd)  # the socket pair: connected
        b = sw.services[0].backends[1]
        assert b.ejected_until == 0.0 and health.state_name(b, POLICY, 1.01) == "up"
        assert (monitor.signals, monitor.confirmed, monitor.unconfirmed) == (2, 0, 1)
        assert monitor.inflight == {}
        monitor.close()
    for one, other in pairs:
        one.close()
        other.close()


def test_the_loop_wakes_for_the_next_check_to_start_or_time_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop asks the monitor every turn when it must wake next; the answer is kept from
    the last scan rather than worked out over every backend each turn. A service that stops
    its checks stops waking the loop. Checks are stubbed with socket pairs (no probe leaves
    this host)."""
    import selectors
    import socket

    from pktswitch.control import health_checks as monitor_module
    from pktswitch.control.config import parse

    def config(names: str, check: str = "tcp") -> str:
        text = f'[switch]\nsnat = ["{SNAT}"]\ncontrol = "/tmp/x.sock"\n'
        text += f'[[service]]\nname = "web"\nvip = "{VIP}:80"\n'
        text += f'[service.health]\ncheck = "{check}"\ninterval = 2.0\ntimeout = 0.5\n'
        for i, n in enumerate(names, 1):
            text += f'[[service.backend]]\nname = "{n}"\naddress = "192.0.2.{i}:80"\n'
        return text

    pairs: list[tuple[socket.socket, socket.socket]] = []

    def fake_connect(_ip: str, _port: int) -> socket.socket:
        pairs.append(socket.socketpair())
        return pairs[-1][0]

    monkeypatch.setattr(monitor_module, "connect_nonblocking", fake_connect)
    sw = Switch.from_config(parse(config("AB")), seed=1)
    now = [10.0]
    with selectors.DefaultSelector() as sel:
        loop = types.SimpleNamespace(idle=[], deadlines=[], sel=sel)
        clock, write = (lambda: now[0]), (lambda _p: None)
        monitor = monitor_module.HealthMonitor(loop, sw, clock, write)  # type: ignore[arg-type]
        assert loop.deadlines == [monitor.next_deadline] and monitor.next_deadline() is None
        monitor.tick()  # the first scan starts A's and B's checks
        assert len(monitor.inflight) == 2
        assert monitor.next_deadline() == 10.5  # their timeouts, before their next checks
        for fd in list(monitor.inflight):
            monitor._finish(fd, True, "connected", 10.1)
        now[0] = 10.1
        monitor.tick()  # a scan: nothing in flight, the next checks at 12
        assert monitor.next_deadline() == 12.0
        sw.reconfigure(parse(config("ABC")), 10.11)
        now[0] = 10.12
        monitor.tick()  # too soon for a scan, but C's first check is due: the next scan
        assert (
            monitor.inflight == {} and monitor.next_deadline() == 10.1 + monitor_module.SCAN_EVERY
        )
        now[0] = 10.1 + monitor_module.SCAN_EVERY
        monitor.tick()
        assert [c.backend.name for c in monitor.inflight.values()] == ["C"]
        assert monitor.next_deadline() == now[0] + 0.5
        for fd in list(monitor.inflight):
            monitor._finish(fd, True, "connected", now[0])
        sw.reconfigure(parse(config("ABC", check="none")), now[0])
        now[0] += monitor_module.SCAN_EVERY
        monitor.tick()  # a scan: no backend is checked any more (their due times are kept)
        assert len(monitor.next_check) == 3 and monitor.next_deadline() is None
        monitor.close()
    for a, b in pairs:
        a.close()
        b.close()


def test_the_syn_watch_holds_no_more_than_the_half_open_flows() -> None:
    """A SYN flood at a service with passive health: the watch for SYN-ACKs is bounded by the
    table's half-open limit, and still signals the half-open flows it holds."""
    from scapy.layers.inet import IP, TCP
    from test_switch import CLIENT, VIP, Harness

    h = Harness(max_flows=64, max_half_open=8)
    (svc,) = h.sw.services
    svc.health = POLICY  # passive signals on
    assert svc.health.passive
    for sport in range(1, 201):
        assert h.send(IP(src=CLIENT, dst=VIP) / TCP(sport=sport, dport=80, flags="S")) is not None
        assert len(h.sw._syn_watch) <= 8
    assert len(h.sw._syn_watch) == 8 and h.sw.flows_evicted == 192
    signals = h.sw.take_passive(h.now + svc.health.syn_timeout)
    assert len(signals) == 8  # the eight flows still half-open, each unanswered


def test_the_syn_watch_keeps_its_order_through_compaction() -> None:
    from pktswitch.core.passive import COMPACT, SynWatch

    watch = SynWatch()
    n = 3 * COMPACT
    for i in range(n):
        watch.append(float(i), i % 1000, i)
    taken = [watch.popleft() for _ in range(2 * COMPACT + 5)]  # compacts on the way
    assert taken == [(i % 1000, i) for i in range(2 * COMPACT + 5)]
    assert len(watch) == n - len(taken) and watch.first_due() == float(len(taken))
    watch.append(-1.0, 7, 2**32 - 1)  # the largest generation and its slot, packed
    rest = [watch.popleft() for _ in range(len(watch))]
    assert rest[-1] == (7, 2**32 - 1) and rest[0] == (len(taken) % 1000, len(taken))
    assert len(watch) == 0 and watch.first_due() is None
