"""Reload: a re-read config applied to a running switch without touching its flows."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import pytest
from click.testing import CliRunner
from pktswitch._native import lib
from scapy.layers.inet import IP, TCP
from test_cli import Running

from pktswitch.cli import main
from pktswitch.control.config import load, parse, reload_refusal
from pktswitch.control.daemon import Reloader, handlers
from pktswitch.core.switch import SNAT_SWEEP, Switch
from pktswitch.core.tcpstate import State

CLIENT, VIP, SNAT = "198.51.100.2", "203.0.113.10", "203.0.113.1"


def config(backends: dict[str, int], extra: str = "", switch: str = "") -> str:
    text = f'[switch]\nsnat = ["{SNAT}"]\ncontrol = "/tmp/x.sock"\n{switch}\n'
    text += f'[[service]]\nname = "web"\nvip = "{VIP}:80"\n'
    for name, weight in backends.items():
        ip = {"A": 1, "B": 2, "C": 3}[name]
        text += f'[[service.backend]]\nname = "{name}"\naddress = "192.0.2.{ip}:80"\n'
        text += f"weight = {weight}\n"
    return text + extra


class Wire:
    """Packets through a Switch by hand: SYN, the backend's SYN-ACK, the client's ACK."""

    def __init__(self, sw: Switch) -> None:
        self.sw = sw
        self.now = 10.0

    def send(self, pkt: IP) -> IP | None:
        raw = bytes(pkt)
        self.sw.buf[: len(raw)] = raw
        return IP(bytes(self.sw.buf[: len(raw)])) if self.sw.process(len(raw), self.now) else None

    def connect(self, sport: int, port: int = 80) -> IP:
        syn = self.send(IP(src=CLIENT, dst=VIP) / TCP(sport=sport, dport=port, flags="S", seq=1))
        assert syn is not None
        t = syn[TCP]
        reply = IP(src=syn.dst, dst=syn.src) / TCP(sport=t.dport, dport=t.sport, flags="SA", ack=2)
        assert self.send(reply) is not None
        assert self.send(IP(src=CLIENT, dst=VIP) / TCP(sport=sport, dport=port, flags="A", seq=2))
        return syn

    def data(self, sport: int, port: int = 80) -> IP | None:
        p = IP(src=CLIENT, dst=VIP) / TCP(sport=sport, dport=port, flags="PA", seq=2) / b"GET"
        return self.send(p)


def test_reload_adds_removes_and_reweighs_backends_and_flows_stay() -> None:
    sw = Switch.from_config(parse(config({"A": 1, "B": 1})), seed=1)
    w = Wire(sw)
    on_a, on_b = w.connect(1000), w.connect(1001)
    assert (on_a.dst, on_b.dst) == ("192.0.2.1", "192.0.2.2")
    api = f'[[service]]\nname = "api"\nvip = "{VIP}:8080"\n'
    api += '[[service.backend]]\nname = "C"\naddress = "192.0.2.3:8080"\n'
    new = parse(config({"A": 3, "C": 1}, extra=api + "[timeouts]\ntime_wait = 5\n"))
    changes = sw.reconfigure(new, w.now)
    assert changes == [
        "web/A: weight 1 -> 3",
        "web/C: added, 192.0.2.3:80 weight 1",
        "web/B: removed; its flows stay until they end (1 established, 0 other)",
        "api: added, 203.0.113.10:8080",
        "timeout TIME_WAIT: 120 -> 5 s",
    ]
    # the established flows go on, each to its backend, B's too
    assert w.data(1000).dst == "192.0.2.1"  # type: ignore[union-attr]
    assert w.data(1001).dst == "192.0.2.2"  # type: ignore[union-attr]
    # new flows: never B; A and C by the scheduler (rr); the new service answers
    dsts = [w.send(IP(src=CLIENT, dst=VIP) / TCP(sport=2000 + i, flags="S")) for i in range(4)]
    assert [p.dst for p in dsts if p] == ["192.0.2.1", "192.0.2.3", "192.0.2.1", "192.0.2.3"]
    assert w.connect(3000, port=8080).dst == "192.0.2.3"
    rows = {(r["service"], r["backend"]): r for r in sw.backends(w.now)}
    assert (rows["web", "B"]["health"], rows["web", "B"]["weight"]) == ("removed", 0)
    assert rows["web", "B"]["active"] == 1 and sw.table.timeouts[State.TIME_WAIT] == 5
    # B's last flow ends: B is forgotten, and says so
    rst = IP(src=CLIENT, dst=VIP) / TCP(sport=1001, dport=80, flags="R", seq=5)
    assert w.send(rst) is not None
    w.now += 11  # CLOSE: 10 s
    sw.expire(w.now)
    assert "web/B: removed, its last flow ended" in sw.refresh(w.now)
    assert ("web", "B") not in {(r["service"], r["backend"]) for r in sw.backends(w.now)}


def test_a_removed_service_takes_no_new_flows_but_keeps_its_own() -> None:
    two = config({"A": 1}) + '[[service]]\nname = "old"\nvip = "203.0.113.10:81"\n'
    two += '[[service.backend]]\nname = "B"\naddress = "192.0.2.2:81"\n'
    sw = Switch.from_config(parse(two), seed=1)
    w = Wire(sw)
    w.connect(1000, port=81)
    assert sw.reconfigure(parse(config({"A": 1})), w.now) == [
        "old: removed (its flows stay until they end)"
    ]
    assert w.data(1000, port=81).dst == "192.0.2.2"  # type: ignore[union-attr]
    assert w.send(IP(src=CLIENT, dst=VIP) / TCP(sport=5, dport=81, flags="S")) is None
    assert sw.dropped["no_service"] == 1
    assert [r["health"] for r in sw.backends(w.now) if r["service"] == "old"] == ["removed"]


def test_reload_changes_scheduler_acl_and_half_open_limit() -> None:
    sw = Switch.from_config(parse(config({"A": 1, "B": 1})), seed=1)
    acl = 'deny = ["198.51.100.0/24"]\n'
    new = config({"A": 1, "B": 1}, switch="max_flows = 262144\nmax_half_open = 100\n")
    new = new.replace('vip = "203.0.113.10:80"\n', f'vip = "{VIP}:80"\nscheduler = "wlc"\n{acl}')
    assert sw.reconfigure(parse(new), 1.0) == [
        "web: scheduler rr -> wlc",
        "web: access control changed",
        "max_half_open: 65536 -> 100",
    ]
    assert sw.services[0].scheduler.name == "wlc" and sw.table.max_half_open == 100
    assert Wire(sw).send(IP(src=CLIENT, dst=VIP) / TCP(sport=5, flags="S")) is None
    assert sw.dropped == {"acl_denied": 1}
    assert sw.reconfigure(parse(new), 1.0) == []  # the same file again: nothing changes


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("snat = [", 'tun = "other"\nsnat = ['),
            "new.toml: switch.tun: the running value 'pks0' (it changes only with a restart), "
            "got 'other'",
        ),
        (
            ("max_flows", "max_flows = 10\n#"),
            "new.toml: switch.max_flows: the running value 262144 (it changes only with a "
            "restart), got 10",
        ),
        (
            (f"{VIP}:80", "203.0.113.11:80"),
            "new.toml: service[0].vip: '203.0.113.10:80' as running (a service keeps its VIP; "
            "add the new one under another name), got '203.0.113.11:80'",
        ),
        (
            ("snat = [", 'hash_secret = "a new secret of 27 bytes"\nsnat = ['),
            "new.toml: switch.hash_secret: the running value 'secret' (it changes only with a "
            "restart), got 'another'",
        ),
        (
            (f'vip = "{VIP}:80"', f'vip = "{VIP}:80"\nprotocol = "udp"'),
            "new.toml: service[0].protocol: 'tcp' as running (a service keeps its protocol; "
            "add the new one under another name), got 'udp'",
        ),
    ],
    ids=["tun", "max_flows", "vip", "hash_secret", "protocol"],
)
def test_what_only_a_restart_changes_is_refused(change: tuple[str, str], message: str) -> None:
    text = config({"A": 1}, switch="max_flows = 262144\n")
    running = parse(text, "run.toml")
    new = parse(text.replace(*change), "new.toml")
    refusal = reload_refusal(running, new)
    assert refusal is not None and str(refusal) == message


def test_reload_command_applies_the_file_and_refuses_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "pktswitch.toml"
    off = 'syn_cookies = "off"'  # as Running's switch has them
    path.write_text(config({"A": 1, "B": 1, "C": 1}, switch=off))
    r = Running(tmp_path)
    reloader = Reloader(load(path), r.sw, None, clock=lambda: 105.0)
    r.server.handlers = handlers(r.sw, r.loop, clock=lambda: 105.0, reloader=reloader)
    try:
        path.write_text(config({"A": 1, "B": 2, "C": 1}, switch=off))
        out = CliRunner().invoke(main, ["reload", "-s", r.path])
        assert out.exit_code == 0, out.output
        assert out.output == (f"reloaded {path}: 1 change(s)\n  web/B: weight 1 -> 2\n")
        path.write_text(config({"A": 1}).replace("weight = 1", "weight = -1"))
        out = CliRunner().invoke(main, ["reload", "-s", r.path])
        assert out.exit_code == 1
        assert out.output == (
            "error: reload: refused, the running config stays: "
            f"{path}: service[0].backend[0].weight: an integer 0..65535, got -1\n"
        )
        stats = json.loads(CliRunner().invoke(main, ["stats", "--json", "-s", r.path]).output)
        assert stats["reloads"] == {"applied": 1, "refused": 1}
        assert [b.name for b in r.sw.services[0].backends] == ["A", "B", "C"]
    finally:
        r.close()


def test_turning_checks_off_brings_a_down_backend_back() -> None:
    health = '[service.health]\ncheck = "tcp"\n'
    text = config({"A": 1, "B": 1})
    with_checks = text.replace('vip = "203.0.113.10:80"\n', f'vip = "{VIP}:80"\n{health}')
    sw = Switch.from_config(parse(with_checks), seed=1)
    b = sw.services[0].backends[1]
    b.up = False
    sw.refresh(1.0)
    assert b.weight == 0
    assert sw.reconfigure(parse(text), 2.0) == ["web: health policy changed"]
    assert (b.up, b.weight) == (True, 1)
    rows = {r["backend"]: r["health"] for r in sw.backends(2.0)}
    assert rows == {"A": "up", "B": "up"}


def test_what_reloads_removed_is_let_go_once_its_last_flow_ends() -> None:
    """A service and a backend that reloads remove and add again, fifty times, with a flow
    left on the first ones: nothing piles up. That flow keeps its service and backend until
    it ends; then their numbers go to the next new ones, whose flows C opens toward the
    right backend with the right SNAT queue, and nothing holds the old objects any more."""
    old = f'[[service]]\nname = "old"\nvip = "{VIP}:81"\n'
    old += '[[service.backend]]\nname = "B"\naddress = "192.0.2.2:81"\n'
    with_old, with_c = parse(config({"A": 1}) + old), parse(config({"A": 1, "C": 1}))
    sw = Switch.from_config(with_old, seed=1)
    services, backends = sw.table.services, sw.table.backends
    w = Wire(sw)
    assert w.connect(1000, port=81).dst == "192.0.2.2"
    (first,) = [s for s in sw.services if s.name == "old"]
    n_service, n_backend = services.get(first), backends.get(first.backends[0])
    assert n_service is not None and n_backend is not None
    gone, gone_b = weakref.ref(first), weakref.ref(first.backends[0])
    id_b = id(first.backends[0])  # the key of its SNAT queue, which goes with it
    del first
    for _ in range(50):
        sw.reconfigure(with_c, w.now)
        sw.reconfigure(with_old, w.now)
    # web and the two "old": the one with the flow, and the one in the config now; the
    # backends A, B twice, and no C (each had no flow, and went at the next reload)
    assert (len(services), len(backends)) == (3, 3)
    assert sw.table.load(n_backend) == (1, 0)  # C counts the flow on it too (lc, wlc read it)
    assert w.data(1000, port=81).dst == "192.0.2.2"  # type: ignore[union-attr]
    (row,) = [r for r in sw.flows(w.now) if r["client"] == f"{CLIENT}:1000"]
    assert (row["service"], row["backend"]) == ("old", "B")
    # the "old" of the config goes at once (no flow); the first waits for its flow
    assert sw.reconfigure(with_c, w.now)[-1] == "old: removed (its flows stay until they end)"
    assert (len(services), len(backends)) == (2, 3)  # web and the first old; A, B, C
    rst = IP(src=CLIENT, dst=VIP) / TCP(sport=1000, dport=81, flags="R", seq=5)
    assert w.send(rst) is not None
    w.now += 11  # CLOSE: 10 s
    sw.expire(w.now)
    assert "old/B: removed, its last flow ended" in sw.refresh(w.now)
    gc.collect()
    assert (gone(), gone_b()) == (None, None) and id_b not in sw._endpoints
    assert (len(services), len(backends)) == (1, 2)  # web; A and C
    # a new service and backend take the numbers let go last; C opens the new service's
    # flows toward its backend, with the SNAT queue of its address
    api = f'[[service]]\nname = "api"\nvip = "{VIP}:8080"\n'
    api += '[[service.backend]]\nname = "D"\naddress = "192.0.2.4:8080"\n'
    sw.reconfigure(parse(config({"A": 1}) + api), w.now)
    (svc,) = [s for s in sw.services if s.name == "api"]
    d = svc.backends[0]
    assert (services.get(svc), backends.get(d)) == (n_service, n_backend)
    assert sw.table.load(n_backend) == (0, 0)  # the number comes without the old one's flows
    assert sw.table.tab.bk_ep[n_backend] == sw.pool.endpoint(d.endpoint)
    opened = sw.stats(w.now)["flows_opened_in_c"]
    syn = w.connect(2000, port=8080)
    assert (syn.src, syn.dst, syn[TCP].dport) == (SNAT, "192.0.2.4", 8080)
    assert sw.stats(w.now)["flows_opened_in_c"] == opened + 1
    (row,) = [r for r in sw.flows(w.now) if r["client"] == f"{CLIENT}:2000"]
    assert (row["service"], row["backend"], row["state"]) == ("api", "D", "ESTABLISHED")
    assert sw.table.load(n_backend) == (d.active, d.inactive) == (1, 0)


def test_a_removed_backend_s_snat_queue_goes_once_its_ports_time_wait_is_over() -> None:
    """C (192.0.2.3:80) is removed by a reload and its flow ends: C is let go, but its SNAT
    queue stays while C may still hold the freed port in TIME_WAIT, and while any backend
    (C back, or another service's) sends to that address and port; then it goes, and C's
    backend number and queue number go to a new backend elsewhere, whose flows C opens
    with the right queue, as it does C's, back with new ones."""
    abc, ab = parse(config({"A": 1, "B": 1, "C": 1})), parse(config({"A": 1, "B": 1}))
    x = f'[[service]]\nname = "api"\nvip = "{VIP}:81"\n'
    x += '[[service.backend]]\nname = "X"\naddress = "192.0.2.3:80"\n'  # C's endpoint
    d_text = '[[service.backend]]\nname = "D"\naddress = "192.0.2.4:80"\n'  # to web
    abd = parse(config({"A": 1, "B": 1}, d_text))
    sw = Switch.from_config(abc, seed=1)
    c_ep, d_ep = (bytes([192, 0, 2, 3]), 80), (bytes([192, 0, 2, 4]), 80)
    w = Wire(sw)
    assert [w.connect(sport).dst for sport in (1, 2, 3)] == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    q_c = sw.pool.endpoint(c_ep)
    sw.reconfigure(ab, w.now)
    assert w.send(IP(src=CLIENT, dst=VIP) / TCP(sport=3, dport=80, flags="R", seq=2))
    w.now += 11  # CLOSE: 10 s
    assert sw.expire(w.now) == 1  # the pair goes back to C's queue now
    freed_at = w.now
    assert "web/C: removed, its last flow ended" in sw.refresh(w.now)
    assert sw.stats(w.now)["snat_queues"] == 3 and sw.pool.freed(c_ep)[0] == 1

    def queues_at(dt: float, cfg: object) -> int:  # a reload at freed_at + dt, then a sweep
        w.now = freed_at + dt
        sw.reconfigure(cfg, w.now)
        sw.expire(w.now)
        return int(sw.stats(w.now)["snat_queues"])

    t = 59.9
    assert queues_at(t, ab) == 3  # C may still hold the port in TIME_WAIT
    assert queues_at(t + SNAT_SWEEP, abc) == 3  # past it, but C is back: its queue stays
    assert queues_at(t + 2 * SNAT_SWEEP, parse(config({"A": 1, "B": 1}, x))) == 3  # X sends
    assert sw.pool.freed(c_ep)[0] == 1  # there now; the ports' order is kept
    assert queues_at(t + 3 * SNAT_SWEEP, ab) == 2  # nobody does: it goes
    assert sw.pool.freed(c_ep) == (0, 0)
    # no backend number names a queue any more but a live backend's
    assert [sw.table.tab.bk_ep[n] for n in sw.table.backends._free] == [lib.PKS_NONE] * 2
    sw.reconfigure(abd, w.now)  # D, elsewhere, takes a number let go, and C's queue number
    d = next(b for b in sw.services[0].backends if b.name == "D")
    n_d = sw.table.backends.get(d)
    assert n_d is not None and sw.pool.endpoint(d_ep) == q_c
    assert {w.connect(sport).dst for sport in (4, 5, 6)} == {"192.0.2.1", "192.0.2.2", "192.0.2.4"}
    assert sw.pool.in_use(d_ep) == 1 and sw.table.tab.bk_ep[n_d] == q_c
    sw.reconfigure(parse(config({"A": 1, "B": 1, "C": 1}, d_text)), w.now)  # C is back
    c = next(b for b in sw.services[0].backends if b.name == "C")
    assert {w.connect(sport).dst for sport in (7, 8, 9, 10)} == {
        f"192.0.2.{i}" for i in range(1, 5)
    }
    n_c2 = sw.table.backends.get(c)
    assert n_c2 is not None and sw.table.tab.bk_ep[n_c2] == sw.pool.endpoint(c_ep) != q_c
    assert sw.pool.in_use(c_ep) == 1 and sw.pool.freed(c_ep) == (0, 0)
    assert sw.stats(w.now)["flows_opened_in_c"] == 3 + 3 + 4  # every one, toward its queue
