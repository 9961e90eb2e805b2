"""Health of UDP services: the backend's ICMP port unreachable about a flow's datagram is a
passive signal (native/icmp.c), confirmed by a datagram of the switch's own that the backend
must refuse too (real sockets on loopback, whose refusals the kernel reports), and active
checks connect to the policy's TCP `port`."""

from __future__ import annotations

import selectors
import socket
import types
from collections.abc import Iterator

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.packet import Raw
from test_health import send

from pktswitch.control import health_checks
from pktswitch.control.config import ConfigError, parse
from pktswitch.core.switch import ServiceState, Switch
from pktswitch.sched import health_policy as health
from pktswitch.sched.health_policy import HealthPolicy
from pktswitch.sched.pool import BackendState
from pktswitch.sched.registry import make

VIP, CLIENT, SNAT = "203.0.113.10", "198.51.100.2", "203.0.113.1"
POLICY = HealthPolicy(check="none", passive=True, timeout=0.5, interval=1.0)


@pytest.fixture
def ports() -> Iterator[tuple[int, socket.socket]]:
    """A loopback UDP port nobody listens on (refused), and a bound socket that never answers."""
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    yield port, silent
    silent.close()


def switch(port_a: int, port_b: int, policy: HealthPolicy = POLICY) -> Switch:
    backends = [BackendState("A", "127.0.0.1", port_a), BackendState("B", "127.0.0.1", port_b)]
    svc = ServiceState("dns", VIP, 53, make("rr"), backends, protocol="udp", health=policy)
    return Switch([svc], snat=[SNAT], seed=1)


def refuse(sw: Switch, sport: int, now: float, code: int = 3) -> IP:
    """A client datagram, and the backend's ICMP unreachable (code) about it."""
    out = send(sw, IP(src=CLIENT, dst=VIP) / UDP(sport=sport, dport=53) / b"q", now)
    assert out is not None
    send(sw, IP(src=out.dst, dst=out.src) / ICMP(type=3, code=code) / Raw(bytes(out)), now)
    return out


def test_a_port_unreachable_from_the_backend_is_a_passive_signal() -> None:
    sw = switch(5353, 5354)
    out = refuse(sw, 40000, 1.0)
    (event,) = sw.take_passive(1.0)
    assert (event[1].name, event[1].port, event[2]) == (
        "A",
        out[UDP].dport,
        "ICMP port unreachable",
    )
    refuse(sw, 40001, 1.0, code=1)  # host unreachable: about the path, not the backend's port
    assert sw.take_passive(1.0) == []
    assert sw.stats(1.0)["icmp_errors_translated"] == {"to_backend": 0, "to_client": 2}


def test_without_passive_signals_a_refusal_is_only_passed_on() -> None:
    sw = switch(5353, 5354, HealthPolicy(check="none", passive=False))
    refuse(sw, 40000, 1.0)
    assert sw.take_passive(1.0) == []


def monitor_of(sw: Switch, sel: selectors.BaseSelector, now: list[float]) -> object:
    loop = types.SimpleNamespace(idle=[], deadlines=[], sel=sel)
    return health_checks.HealthMonitor(loop, sw, lambda: now[0], lambda _p: None)  # type: ignore[arg-type]


def test_a_refusal_confirmed_by_the_switch_s_own_datagram_ejects(
    ports: tuple[int, socket.socket],
) -> None:
    closed, silent = ports
    sw = switch(closed, silent.getsockname()[1])
    now = [1.0]
    with selectors.DefaultSelector() as sel:
        monitor = monitor_of(sw, sel, now)
        assert isinstance(monitor, health_checks.HealthMonitor)
        refuse(sw, 40000, 1.0)
        monitor.tick()
        (fd,) = monitor.inflight
        assert monitor.inflight[fd].udp and monitor.inflight[fd].confirms
        assert sel.select(timeout=5), "the kernel's refusal did not come"
        monitor._ready(fd)
        a = sw.services[0].backends[0]
        assert health.state_name(a, POLICY, 1.0) == "ejected"
        assert a.health_reason == (
            "ejected for 5 s: ICMP port unreachable, and the switch's check failed "
            "(ICMP port unreachable)"
        )
        assert (monitor.signals, monitor.confirmed, monitor.unconfirmed) == (1, 1, 0)
        monitor.close()


def test_a_refusal_the_backend_does_not_repeat_ejects_nothing(
    ports: tuple[int, socket.socket],
) -> None:
    closed, silent = ports
    sw = switch(silent.getsockname()[1], closed)  # A listens (and never answers)
    now = [1.0]
    with selectors.DefaultSelector() as sel:
        monitor = monitor_of(sw, sel, now)
        assert isinstance(monitor, health_checks.HealthMonitor)
        refuse(sw, 40000, 1.0)  # a forged or stale refusal: A does listen
        monitor.tick()
        assert len(monitor.inflight) == 1
        assert silent.recv(16) == b""  # the switch's datagram reached A: empty
        now[0] = 1.0 + POLICY.timeout + 0.1
        monitor._next_scan = 0.0
        monitor.tick()  # its timeout passed with no refusal: the check passed
        a = sw.services[0].backends[0]
        assert health.state_name(a, POLICY, now[0]) == "up"
        assert (monitor.signals, monitor.confirmed, monitor.unconfirmed) == (1, 0, 1)
        assert monitor.inflight == {}
        monitor.close()


UDP_SERVICE = """[switch]
snat = ["203.0.113.1"]
[[service]]
name = "dns"
vip = "203.0.113.10:53"
protocol = "udp"
[service.health]
{health}
[[service.backend]]
name = "A"
address = "192.0.2.1:53"
"""


def test_a_udp_service_s_check_needs_a_tcp_port() -> None:
    with pytest.raises(ConfigError) as info:
        parse(UDP_SERVICE.format(health='check = "tcp"'), "dns.toml")
    assert info.value.key == "service[0].health.port"
    assert "the TCP port a UDP service's tcp check connects to" in info.value.message
    cfg = parse(UDP_SERVICE.format(health='check = "none"'), "dns.toml")
    assert cfg.services[0].health is not None and cfg.services[0].health.port == 0


def test_checks_connect_to_the_policy_s_port(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = parse(UDP_SERVICE.format(health='check = "tcp"\nport = 8053'), "dns.toml")
    sw = Switch.from_config(cfg, seed=1)
    asked: list[tuple[str, int]] = []

    def connects(ip: str, port: int) -> socket.socket:
        asked.append((ip, port))
        return socket.socketpair()[0]

    monkeypatch.setattr(health_checks, "connect_nonblocking", connects)
    with selectors.DefaultSelector() as sel:
        monitor = monitor_of(sw, sel, [1.0])
        assert isinstance(monitor, health_checks.HealthMonitor)
        monitor.tick()
        assert asked == [("192.0.2.1", 8053)]
        monitor.close()
