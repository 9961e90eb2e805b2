"""New flows opened by C for services scheduled ahead (core/ahead.py), against the same
switch with C's opening turned off: Python's path is the reference, byte for byte."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pktswitch._native import lib
from scapy.layers.inet import IP, TCP
from scapy_oracle import checksums_ok
from test_switch import BACKENDS, CLIENT, VIP, Harness

from pktswitch.core.acl import Acl, CompiledAcl
from pktswitch.core.switch import Switch
from pktswitch.core.tcpstate import DEFAULT_TIMEOUTS, State

UNCOUNTED = ("packets_fast_path", "flows_opened_in_c", "to_python")  # differ by design


def held_reasons(sw: Switch) -> dict[str, int]:
    """Each reason text the switch holds, and how many flows hold it."""
    r = sw.table.reasons
    return {text: r._refs[n] for text, n in r._ids.items()}


def python_only(h: Harness) -> Harness:
    h.sw.table.tab.open_on = 0  # every SYN through Python
    return h


class Twins:
    """The same packets into a switch that opens flows in C and one that does not."""

    def __init__(self, mode: str, scheduler: str, **kw: object) -> None:
        self.c = Harness(mode=mode, scheduler=scheduler, **kw)
        self.py = python_only(Harness(mode=mode, scheduler=scheduler, **kw))
        self.syns: dict[int, IP] = {}  # client port -> the SYN as the backend got it

    def both(self, f: str, *args: object, **kw: object) -> IP | None:
        a = getattr(self.c, f)(*args, **kw)
        b = getattr(self.py, f)(*args, **kw)
        assert (a and bytes(a)) == (b and bytes(b))
        assert a is None or checksums_ok(a)
        return a

    def tick(self, dt: float = 0.25) -> None:
        self.c.now += dt
        self.py.now += dt

    def call(self, method: str, *args: object) -> None:
        for h in (self.c, self.py):
            getattr(h.sw, method)(*args, h.now)

    def syn(self, sport: int) -> None:
        out = self.both("client", "S", sport=sport, seq=100)
        assert out is not None
        self.syns[sport] = out

    def handshake(self, sport: int) -> None:
        self.both("backend", self.syns[sport], "SA", seq=500, ack=101)
        self.both("client", "A", sport=sport, seq=101, ack=501)

    def close(self, sport: int) -> None:
        self.both("client", "FA", sport=sport, seq=101, ack=501)
        self.both("backend", self.syns[sport], "FA", seq=501, ack=102)
        self.both("client", "A", sport=sport, seq=102, ack=502)

    def same(self) -> None:
        c, py = self.c, self.py

        # flows opened at one instant may be listed in either order (they sit in other slots)
        def rows(h: Harness) -> list[dict[str, object]]:
            return sorted(h.sw.flows(h.now), key=lambda r: (r["client"], r["state"]))

        assert rows(c) == rows(py)
        assert c.sw.backends(c.now) == py.sw.backends(py.now)
        sc, sp = c.sw.stats(c.now), py.sw.stats(py.now)
        for key in UNCOUNTED:
            sc.pop(key), sp.pop(key)
        assert sc == sp

        def held(h: Harness) -> dict[str, int]:  # each reason text and the flows holding it
            return held_reasons(h.sw)

        assert held(c) == held(py)
        for h in (c, py):  # C counts every flow per backend as Python does (lc, wlc pick by it)
            numbered = h.sw.table.backends
            loads = {n: h.sw.table.load(n) for n in range(len(numbered._objs)) if numbered[n]}
            assert loads == {n: (numbered[n].active, numbered[n].inactive) for n in loads}, (
                "C's and Python's counts differ"
            )
        for name in "ABC":
            ep = (bytes(map(int, BACKENDS[name].split("."))), 8080)
            assert c.sw.pool.in_use(ep) == py.sw.pool.in_use(ep)
            assert c.sw.pool.freed(ep)[0] == py.sw.pool.freed(ep)[0]


IN_C = ["rr", "wrr", "iphash", "maglev", "lc", "wlc"]  # the schedulers C opens flows for


@pytest.mark.parametrize("mode", ["fullnat", "nat"])
@pytest.mark.parametrize("scheduler", IN_C)
def test_flows_opened_by_c_are_the_flows_python_opens(mode: str, scheduler: str) -> None:
    t = Twins(mode, scheduler)
    t.call("set_weight", "web", "C", 3)  # wrr: a period of 5 (A B C C ...); rr: weights ignored
    for sport in range(1, 13):
        t.syn(sport)
        t.tick()
    for sport in range(1, 7):
        t.handshake(sport)
    for sport in range(1, 4):
        t.close(sport)
    t.same()
    t.call("set_weight", "web", "A", 0)  # mid-period: A takes no new flows
    for sport in (1, 2, 3):  # the client reuses ports whose flows wait in TIME_WAIT
        assert t.c.flow(sport)["state"] == "TIME_WAIT"
        t.syn(sport)
        t.tick()
    for sport in range(13, 20):
        t.syn(sport)
    t.call("set_weight", "web", "A", 2)
    for sport in range(20, 26):
        t.syn(sport)
    t.same()
    c, py = t.c.sw, t.py.sw
    assert c.flows_reused == py.flows_reused == 3
    assert c.flows_created == py.flows_created == 12 + 3 + 7 + 6
    # C opened every flow: the reused ports' too
    assert (c.stats(0.0)["flows_opened_in_c"], py.stats(0.0)["flows_opened_in_c"]) == (28, 0)
    assert c.fast > py.fast
    for h in (t.c, t.py):
        h.now += DEFAULT_TIMEOUTS[State.ESTABLISHED] + 1
    assert c.expire(t.c.now) == py.expire(t.py.now) == 25
    t.same()
    assert len(c.table) == 0


def test_which_tells_the_backend_c_gives_the_next_flow() -> None:
    h = Harness(scheduler="wrr")
    for name, w in zip("ABC", (2, 3, 5), strict=True):
        h.sw.set_weight("web", name, w, h.now)
    got = []
    for sport in range(1, 21):
        told = h.sw.which("web", CLIENT, sport)
        out = h.client("S", sport=sport)
        assert out is not None and out.dst == BACKENDS[told["backend"]]
        got.append(told["backend"])
        assert h.flow(sport)["reason"] == told["reason"]
    assert got == list("CBACBCCABC") * 2  # nginx's smooth order, two periods
    assert h.sw.stats(h.now)["flows_opened_in_c"] == 20


def test_c_leaves_a_syn_to_python_when_it_lacks_a_spare_slot_or_an_snat_pair() -> None:
    h = Harness(names="A", snat_ports=(1024, 1025))  # two SNAT pairs toward A
    tab = h.sw.table.tab
    lent = tab.nspare
    tab.nspare = 0  # nothing lent: Python opens it (and lends again)
    assert h.client("S", sport=1) is not None
    assert h.sw.stats(h.now)["flows_opened_in_c"] == 0 and tab.nspare > 0
    assert tab.nspare == lent - 1
    assert h.client("S", sport=2) is not None  # the last pair, by C
    assert h.sw.stats(h.now)["flows_opened_in_c"] == 1
    assert h.client("S", sport=3) is None  # none left: Python counts it
    assert h.sw.dropped == {"snat_exhausted": 1} and h.sw.pool.exhausted == 1
    assert [r["client"] for r in h.sw.flows(h.now)] == [f"{CLIENT}:1", f"{CLIENT}:2"]


@pytest.mark.parametrize("scheduler", ["rr", "wrr"])
def test_weight_changes_mid_period_give_the_python_schedulers_sequence(scheduler: str) -> None:
    from pktswitch.sched.pool import BackendState
    from pktswitch.sched.registry import make

    h = Harness(scheduler=scheduler)
    ref = make(scheduler)  # the reference: the scheduler alone, told every change
    backends = [BackendState(n, BACKENDS[n], 8080) for n in "ABC"]
    changes = {7: ("B", 3), 11: ("A", 0), 12: ("C", 2), 19: ("A", 4), 23: ("B", 0)}
    want, got = [], []
    for i in range(40):
        if i in changes:
            name, w = changes[i]
            h.sw.set_weight("web", name, w, h.now)
            (b,) = [b for b in backends if b.name == name]
            b.weight = b.config_weight = w
            ref.update(backends)
        picked = ref.pick(backends, bytes(4), 0)
        assert picked is not None
        want.append(picked[0].name)
        out = h.client("S", sport=100 + i)
        assert out is not None
        got.append(next(n for n, a in BACKENDS.items() if a == out.dst))
    assert got == want
    assert h.sw.stats(h.now)["flows_opened_in_c"] == 40


KINDS = ["syn"] * 3 + ["handshake"] * 2 + ["close"] * 2 + ["rst", "tick", "weight", "expire"]
ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.integers(1, 6),  # a client port (few, so that ports are reused)
        st.integers(0, 3),  # a weight, or a number of 20 s ticks
    ),
    min_size=10,
    max_size=80,
)


@settings(max_examples=60, deadline=None)
@given(
    mode=st.sampled_from(["fullnat", "nat"]),
    scheduler=st.sampled_from(IN_C),
    actions=ACTIONS,
)
def test_any_conversation_gives_the_same_packets_and_counts_whoever_opens(
    mode: str, scheduler: str, actions: list[tuple[str, int, int]]
) -> None:
    # a table of 5 flows, 3 of them half-open at most: SYNs make room by eviction
    t = Twins(mode, scheduler, max_flows=5, max_half_open=3)
    for what, port, n in actions:
        if what == "syn":
            out = t.both("client", "S", sport=port, seq=100)
            if out is not None:
                t.syns[port] = out
        elif port in t.syns and what == "handshake":
            t.handshake(port)
        elif port in t.syns and what == "close":
            t.close(port)
        elif port in t.syns and what == "rst":
            t.both("backend", t.syns[port], "R", seq=501)
        elif what == "tick":
            t.tick(n * 20.0)
        elif what == "weight":
            t.call("set_weight", "web", "ABC"[port % 3], n)
        elif what == "expire":
            assert t.c.sw.expire(t.c.now) == t.py.sw.expire(t.py.now)
        t.same()  # after every step: a flow may not live to the end (lc's reasons name counts)
    # C opened flows in the twin that lets it (not every one: a reused port that also needs
    # an eviction, say, is Python's), none in the other
    c, py = t.c.sw.stats(t.c.now), t.py.sw.stats(t.py.now)
    assert (c["flows_opened_in_c"] > 0) == (c["flows_created"] > 0)
    assert py["flows_opened_in_c"] == 0


def test_a_syn_flood_is_met_in_c_the_oldest_half_open_flows_making_room() -> None:
    t = Twins("fullnat", "rr", max_flows=8, max_half_open=3)
    t.syn(1)
    t.handshake(1)
    for sport in range(2, 30):  # SYNs that never finish their handshake
        t.syn(sport)
        t.tick()
    t.same()
    c = t.c.sw
    assert c.flows_evicted == 28 - 3 and c.stats(t.c.now)["half_open"] == 3
    assert c.stats(t.c.now)["flows_opened_in_c"] == 29  # every SYN, evictions included
    assert [r["client"].split(":")[1] for r in c.flows(t.c.now)] == ["1", "27", "28", "29"]
    assert (
        c.pool.in_use((bytes([192, 0, 2, 1]), 8080))
        + c.pool.in_use((bytes([192, 0, 2, 2]), 8080))
        + c.pool.in_use((bytes([192, 0, 2, 3]), 8080))
        == 4
    )


def test_a_full_table_gives_the_evicted_flow_s_slot_to_the_new_one_in_c() -> None:
    t = Twins("fullnat", "rr", max_flows=3, max_half_open=3)
    for sport in range(1, 8):  # the table is full from the third SYN on
        t.syn(sport)
        t.tick()
        t.same()
    c = t.c.sw
    assert c.flows_evicted == 4 and len(c.table) == 3 and c.table.tab.nspare == 0
    assert c.stats(t.c.now)["flows_opened_in_c"] == 7
    assert [r["client"].split(":")[1] for r in c.flows(t.c.now)] == ["5", "6", "7"]
    t.handshake(7)
    t.same()


def test_an_unchanged_reload_keeps_round_robin_s_turn() -> None:
    from pktswitch.control.config import parse

    text = '[switch]\nsnat = ["203.0.113.1"]\ncontrol = "/tmp/x.sock"\n'
    text += f'[[service]]\nname = "web"\nvip = "{VIP}:80"\n'
    for name, ip in BACKENDS.items():
        text += f'[[service.backend]]\nname = "{name}"\naddress = "{ip}:80"\n'
    sw = Switch.from_config(parse(text), seed=1)
    h = Harness()
    h.sw = sw
    got = []
    for sport in range(1, 5):
        if sport == 3:
            assert sw.reconfigure(parse(text), h.now) == []
        out = h.client("S", sport=sport)
        assert out is not None
        got.append(next(n for n, a in BACKENDS.items() if a == out.dst))
    assert got == ["A", "B", "C", "A"]
    assert sw.stats(h.now)["flows_opened_in_c"] == 4


def test_a_traced_syn_is_opened_in_c_and_every_state_change_is_told() -> None:
    from pktswitch.core.trace import Subscription

    h = Harness()
    sub = Subscription()
    h.sw.subscribe(sub)
    syn = h.client("S", seq=100)
    assert syn is not None and h.sw.stats(h.now)["flows_opened_in_c"] == 1
    h.backend(syn, "SA", seq=500, ack=101)
    h.client("A", seq=101, ack=501)
    h.client("FA", seq=101, ack=501)  # ESTABLISHED -> CLOSE_WAIT, by C
    h.backend(syn, "FA", seq=501, ack=102)  # CLOSE_WAIT -> TIME_WAIT, by C, told while tracing
    moves = [r.transition for r in sub.queue if r.transition]
    assert moves == [
        ("NONE", "SYN_RECV"),
        ("SYN_RECV", "ESTABLISHED"),
        ("ESTABLISHED", "CLOSE_WAIT"),
        ("CLOSE_WAIT", "TIME_WAIT"),
    ]
    assert [r.verdict for r in sub.queue] == ["fast"] * 5
    h.sw.unsubscribe(sub)
    assert h.client("S", sport=2) is not None
    assert h.sw.stats(h.now)["flows_opened_in_c"] == 2


def test_a_service_removed_by_a_reload_leaves_the_other_scheduled_in_c() -> None:
    from pktswitch.control.config import parse

    def text(ports: tuple[int, ...]) -> str:
        t = '[switch]\nsnat = ["203.0.113.1"]\ncontrol = "/tmp/x.sock"\n'
        for port in ports:
            t += f'[[service]]\nname = "s{port}"\nvip = "{VIP}:{port}"\n'
            t += '[[service.backend]]\nname = "A"\naddress = "192.0.2.1:80"\n'
        return t

    sw = Switch.from_config(parse(text((80, 81))), seed=1)
    sw.reconfigure(parse(text((81,))), 0.0)
    h = Harness()
    h.sw = sw
    p81 = IP(src=CLIENT, dst=VIP) / TCP(sport=5, dport=81, flags="S")
    p80 = IP(src=CLIENT, dst=VIP) / TCP(sport=5, dport=80, flags="S")
    assert h.send(p81) is not None and h.send(p80) is None
    assert sw.dropped == {"no_service": 1}
    assert sw.stats(h.now)["flows_opened_in_c"] == 1


def test_c_hashes_a_client_as_the_python_schedulers_do() -> None:
    import os

    from pktswitch._native import lib

    from pktswitch.sched.hashing import HASH_KEY, hash64

    for n in (0, 1, 4, 6, 31, 128):
        for _ in range(50):
            data = os.urandom(n)
            assert lib.pks_hash64(HASH_KEY, len(HASH_KEY), data, n) == hash64(data)


@pytest.mark.parametrize("scheduler", ["iphash", "maglev"])
@pytest.mark.parametrize("hash_key", ["ip", "ip+port"])
def test_c_opens_a_hashed_service_s_flows_where_which_says(scheduler: str, hash_key: str) -> None:
    from pktswitch.core.switch import ServiceState, Switch
    from pktswitch.sched.pool import BackendState
    from pktswitch.sched.registry import make

    weights = zip("ABC", (1, 2, 3), strict=True)
    backends = [BackendState(n, BACKENDS[n], 8080, w) for n, w in weights]
    svc = ServiceState("web", VIP, 80, make(scheduler, hash_key=hash_key), backends)
    h = Harness()
    h.sw = Switch([svc], snat=["203.0.113.1"], seed=3)
    seen = set()
    for i in range(60):
        client, sport = f"198.51.100.{2 + i % 20}", 1000 + i
        told = h.sw.which("web", client, sport)
        out = h.send(IP(src=client, dst=VIP) / TCP(sport=sport, dport=80, flags="S"))
        assert out is not None and out.dst == BACKENDS[told["backend"]]
        (row,) = [r for r in h.sw.flows(h.now) if r["client"] == f"{client}:{sport}"]
        assert row["reason"] == told["reason"]
        seen.add(told["backend"])
    assert seen == {"A", "B", "C"}
    assert h.sw.stats(h.now)["flows_opened_in_c"] == 60


class Batch:
    """A switch driven as the drain loop drives it: C decides packet after packet, and Python
    applies the events only when it must decide on a packet itself, and after the batch."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.sent = 0  # packets C forwarded by itself
        self.python = 0  # packets left to Python

    def send(self, pkt: IP) -> IP:
        from pktswitch._native import lib

        sw, raw = self.h.sw, bytes(pkt)
        sw.buf[: len(raw)] = raw
        v = lib.pks_process(sw.table.tab, sw.bufp, len(raw), self.h.now, sw.meta, 0)
        if v == lib.PKS_V_FAST:
            self.sent += 1
        else:
            self.python += 1
            assert sw.after_native(v, self.h.now)
        return IP(bytes(sw.buf[: len(raw)]))


@pytest.mark.parametrize("scheduler", ["rr", "iphash", "maglev", "lc", "wlc"])
@pytest.mark.parametrize("limits", [{"max_half_open": 2}, {"max_flows": 4, "max_half_open": 4}])
def test_flows_c_ends_before_python_sees_them_opened_are_counted_right(
    scheduler: str, limits: dict[str, int]
) -> None:
    one = Harness(scheduler=scheduler, **limits)  # events applied after every packet
    batched = Batch(Harness(scheduler=scheduler, **limits))  # after the batch only

    def conversation(send: Callable[[IP], IP | None]) -> None:
        def c(sport: int, flags: str, seq: int, ack: int = 0) -> IP | None:
            return send(
                IP(src=CLIENT, dst=VIP) / TCP(sport=sport, dport=80, flags=flags, seq=seq, ack=ack)
            )

        syn = c(1, "S", 100)  # a whole connection, then its port again (TIME_WAIT)
        assert syn is not None
        t = syn[TCP]
        b = IP(src=syn.dst, dst=syn.src)
        send(b / TCP(sport=t.dport, dport=t.sport, flags="SA", seq=500, ack=101))
        c(1, "A", 101, 501)
        c(1, "FA", 101, 501)
        send(b / TCP(sport=t.dport, dport=t.sport, flags="FA", seq=501, ack=102))
        c(1, "A", 102, 502)
        c(1, "S", 9000)  # the reused port: C ends the flow in TIME_WAIT
        for sport in (2, 3, 4, 5, 6, 7):  # half-open ones, evicted by those after them
            c(sport, "S", 100)

    conversation(one.send)
    conversation(batched.send)
    batched.h.sw.count_fast(batched.sent)  # as the drain loop counts them
    batched.h.sw.take_events()
    a, b = one.sw, batched.h.sw
    assert a.flows(one.now) == b.flows(batched.h.now)
    assert a.backends(one.now) == b.backends(batched.h.now)
    sa, sb = a.stats(one.now), b.stats(batched.h.now)
    for key in UNCOUNTED:
        sa.pop(key), sb.pop(key)
    assert sa == sb
    assert b.flows_evicted > 0 and b.flows_reused == 1
    assert batched.sent > batched.python  # mostly C's: flows ended before Python saw them open
    assert all(r["reason"] for r in b.flows(batched.h.now))

    assert held_reasons(a) == held_reasons(b)


def _with_acl(t: Twins, acl: CompiledAcl | None) -> None:
    for h in (t.c, t.py):
        (svc,) = h.sw.services
        svc.acl = acl
        h.sw._schedule_ahead(svc)  # as a reload does


@pytest.mark.parametrize("scheduler", ["rr", "iphash"])
def test_c_opens_what_an_access_list_permits_and_leaves_the_refused_to_python(
    scheduler: str,
) -> None:
    t = Twins("fullnat", scheduler)
    _with_acl(t, Acl(allow=("198.51.100.0/24",), deny=("198.51.100.7/32",)).compile())
    clients = ["198.51.100.2", "198.51.100.7", "192.0.2.200", "198.51.100.254", "203.0.113.50"]
    clients.append("198.51.100.9")
    for i, src in enumerate(clients):
        t.both("send", IP(src=src, dst=VIP) / TCP(sport=5000 + i, dport=80, flags="S", seq=1))
        t.tick()
    t.same()
    s = t.c.sw.stats(t.c.now)
    assert (s["acl_denied"], s["dropped"], s["flows"]) == ({"web": 3}, {"acl_denied": 3}, 3)
    assert s["flows_opened_in_c"] == 3  # every permitted client's
    opened = {r["client"].split(":")[0] for r in t.c.sw.flows(t.c.now)}
    assert opened == {"198.51.100.2", "198.51.100.254", "198.51.100.9"}
    if scheduler == "rr":  # a refused SYN takes no turn
        rows = sorted(t.c.sw.flows(t.c.now), key=lambda r: r["client"].split(":")[1])
        assert [r["backend"] for r in rows] == ["A", "B", "C"]
    # the list taken away (a reload): C opens a client it refused before
    _with_acl(t, None)
    t.both("send", IP(src="192.0.2.200", dst=VIP) / TCP(sport=6000, dport=80, flags="S", seq=1))
    t.same()
    assert t.c.sw.stats(t.c.now)["flows_opened_in_c"] == 4


def test_an_access_list_too_long_for_c_leaves_the_service_to_python() -> None:
    h = Harness()
    (svc,) = h.sw.services
    svc.acl = CompiledAcl(tuple((i << 8, 0xFFFFFF00) for i in range(lib.PKS_ACL_MAX + 1)), ())
    h.sw._schedule_ahead(svc)
    assert svc.ahead is not None and svc.ahead.answers == []
    assert h.send(IP(src=CLIENT, dst=VIP) / TCP(sport=7000, dport=80, flags="S")) is None  # refused
    svc.acl = Acl(allow=("198.51.100.0/24",)).compile()
    h.sw._schedule_ahead(svc)
    assert svc.ahead.answers != []
    assert h.send(IP(src=CLIENT, dst=VIP) / TCP(sport=7001, dport=80, flags="S")) is not None
    assert h.sw.stats(h.now)["flows_opened_in_c"] == 1


def test_services_numbered_past_16_bits_have_their_flows_opened_by_c_and_python() -> None:
    """A service holds its number while it or a flow of it lives, so many services at once
    (removed ones with flows left included) number new ones high: past 16 bits their flows
    are opened (by C for rr, by Python for lrt), listed and counted as the first ones'."""
    from pktswitch.control.config import parse

    def text(services: dict[int, str]) -> str:
        t = '[switch]\nsnat = ["203.0.113.1"]\ncontrol = "/tmp/x.sock"\n'
        for port, scheduler in services.items():
            t += f'[[service]]\nname = "s{port}"\nvip = "{VIP}:{port}"\n'
            t += f'scheduler = "{scheduler}"\n'
            t += '[[service.backend]]\nname = "A"\naddress = "192.0.2.1:80"\n'
        return t

    sw = Switch.from_config(parse(text({80: "rr"})), seed=1)
    for _ in range(70_000):  # as 70,000 services holding their numbers (the registry keeps them)
        sw.table.services.number(object())
    sw.reconfigure(parse(text({80: "rr", 81: "rr", 82: "lrt"})), 0.0)
    assert [sw.table.services.number(s) for s in sw.services] == [0, 70_001, 70_002]
    h = Harness()
    h.sw = sw
    for port in (81, 82):
        out = h.send(IP(src=CLIENT, dst=VIP) / TCP(sport=5, dport=port, flags="S"))
        assert out is not None and (out.dst, out[TCP].dport) == ("192.0.2.1", 80)
    assert sorted(r["service"] for r in sw.flows(h.now)) == ["s81", "s82"]
    s = sw.stats(h.now)
    assert (s["flows_created"], s["flows_opened_in_c"]) == (2, 1)


@pytest.mark.parametrize("batch", [256, 1])
@pytest.mark.parametrize("scheduler", ["lc", "wlc"])
def test_a_least_loaded_syn_flood_is_met_in_c_with_the_reason_of_its_pick(
    scheduler: str, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the half-open share full, each SYN evicts the oldest half-open flow: C picks
    before it evicts, as Python does, and Python, applying the events (the eviction, then
    the new flow, in one batch or two), writes the reason of the counts C picked on."""
    from pktswitch.core import switch

    monkeypatch.setattr(switch, "EVENT_BATCH", batch)
    t = Twins("fullnat", scheduler, max_flows=8, max_half_open=3)
    for sport in range(1, 10):
        t.syn(sport)
        t.tick()
        t.same()
    c = t.c.sw
    assert c.flows_evicted == 6 and c.stats(t.c.now)["flows_opened_in_c"] == 9
    # the seventh found flows 4 and 5 on A (4 the oldest, evicted after the pick), 6 on B
    (row,) = [r for r in c.flows(t.c.now) if r["client"].endswith(":7")]
    assert row["backend"] == "C"
    assert row["reason"] == (
        "lc: C 0+0 < B 0+1, A 0+2"
        if scheduler == "lc"
        else "wlc: C 0+0 per 1=0.000 < B 0+1 per 1=0.004, A 0+2 per 1=0.008"
    )


def test_an_lc_flow_keeps_the_reason_of_its_pick_through_later_flows_and_a_reload() -> None:
    """C opens lc flows and Python writes each one's reason from the counts of its pick
    when it applies the flow's OPEN event: later flows change the counts and a reload puts
    other backends in the service, and each reason still tells the counts and the backends
    of its pick."""
    from pktswitch.control.config import parse

    def text(names: str) -> str:
        t = '[switch]\nsnat = ["203.0.113.1"]\ncontrol = "/tmp/x.sock"\n'
        t += f'[[service]]\nname = "web"\nvip = "{VIP}:80"\nscheduler = "lc"\n'
        for i, name in enumerate(names, 11 if names == "XYZ" else 1):
            t += f'[[service.backend]]\nname = "{name}"\naddress = "192.0.2.{i}:80"\n'
        return t

    sw = Switch.from_config(parse(text("ABC")), seed=1)
    h = Harness()
    h.sw = sw
    assert h.client("S", sport=1) is not None and h.client("S", sport=2) is not None
    sw.reconfigure(parse(text("XYZ")), h.now)
    assert h.client("S", sport=3) is not None
    reasons = {r["client"].split(":")[1]: r["reason"] for r in sw.flows(h.now)}
    assert reasons == {
        "1": "lc: A 0+0 <= B 0+0, C 0+0 (tie: first listed)",
        "2": "lc: B 0+0 <= C 0+0, A 0+1 (tie: first listed)",
        "3": "lc: X 0+0 <= Y 0+0, Z 0+0 (tie: first listed)",
    }
    assert sw.stats(h.now)["flows_opened_in_c"] == 3
