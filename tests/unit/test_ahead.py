"""New flows opened by C from the programs a switch compiles its schedulers into
(core/ahead.py): the packets (scapy the oracle), the counts both sides keep, the reasons,
and what the programs keep between flows. C's picks flow by flow against the Python
schedulers: test_differential.py."""

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

UNCOUNTED = ("packets_fast_path",)  # counted by the drain loop in a batch


def held_reasons(sw: Switch) -> dict[str, int]:
    """Each reason text the switch holds, and how many flows hold it."""
    r = sw.table.reasons
    return {text: r._refs[n] for text, n in r._ids.items()}


class Talk:
    """A conversation with one switch, checked after every step: what it writes is
    well-formed for scapy, and what it counts adds up."""

    def __init__(self, mode: str, scheduler: str, **kw: object) -> None:
        self.h = Harness(mode=mode, scheduler=scheduler, **kw)
        self.syns: dict[int, IP] = {}  # client port -> the SYN as the backend got it

    def send(self, f: str, *args: object, **kw: object) -> IP | None:
        out = getattr(self.h, f)(*args, **kw)
        assert out is None or checksums_ok(out)
        return out

    def tick(self, dt: float = 0.25) -> None:
        self.h.now += dt

    def call(self, method: str, *args: object) -> None:
        getattr(self.h.sw, method)(*args, self.h.now)

    def syn(self, sport: int) -> IP:
        out = self.send("client", "S", sport=sport, seq=100)
        assert out is not None
        self.syns[sport] = out
        return out

    def handshake(self, sport: int) -> None:
        self.send("backend", self.syns[sport], "SA", seq=500, ack=101)
        self.send("client", "A", sport=sport, seq=101, ack=501)

    def close(self, sport: int) -> None:
        self.send("client", "FA", sport=sport, seq=101, ack=501)
        self.send("backend", self.syns[sport], "FA", seq=501, ack=102)
        self.send("client", "A", sport=sport, seq=102, ack=502)

    def consistent(self) -> None:
        sw, now = self.h.sw, self.h.now
        rows = sw.flows(now)
        s = sw.stats(now)
        assert s["flows_opened_in_c"] == s["flows_created"]  # C opened every flow
        assert s["to_python"] == {}  # C decided every packet
        assert all(r["reason"] for r in rows)
        by_reason: dict[str, int] = {}
        for r in rows:
            by_reason[str(r["reason"])] = by_reason.get(str(r["reason"]), 0) + 1
        for svc in sw.services:  # and once by rr's program, for each member taking flows
            for r in svc.ahead._held if svc.ahead is not None else ():
                text = sw.table.reasons.text(r)
                by_reason[text] = by_reason.get(text, 0) + 1
        assert held_reasons(sw) == by_reason  # each reason held once per flow, none leaked
        # C's counts of each backend's flows are its flows in the table, by state
        numbered = sw.table.backends
        loads = {n: sw.table.load(n) for n in range(numbered.capacity) if numbered[n]}
        recount = {n: [0, 0] for n in loads}
        for f in sw.table:
            recount[sw.table.native(f).backend][f.state != State.ESTABLISHED] += 1
        assert loads == {n: tuple(c) for n, c in recount.items()}, "C's counts are not its flows"
        for name in "ABC":
            ep = (bytes(map(int, BACKENDS[name].split("."))), 8080)
            mine = sum(r["backend"] == name for r in rows)
            assert sw.pool.in_use(ep) == (mine if sw.mode == "fullnat" else 0)


IN_C = ["rr", "wrr", "iphash", "maglev", "lc", "wlc", "lrt"]  # every scheduler


@pytest.mark.parametrize("mode", ["fullnat", "nat"])
@pytest.mark.parametrize("scheduler", IN_C)
def test_c_opens_every_flow_of_a_conversation(mode: str, scheduler: str) -> None:
    t = Talk(mode, scheduler)
    t.call("set_weight", "web", "C", 3)
    for sport in range(1, 13):
        t.syn(sport)
        t.tick()
    for sport in range(1, 7):
        t.handshake(sport)
    for sport in range(1, 4):
        t.close(sport)
    t.consistent()
    t.call("set_weight", "web", "A", 0)  # A takes no new flows
    for sport in (1, 2, 3):  # the client reuses ports whose flows wait in TIME_WAIT
        assert t.h.flow(sport)["state"] == "TIME_WAIT"
        assert t.syn(sport).dst != BACKENDS["A"]
        t.tick()
    for sport in range(13, 20):
        assert t.syn(sport).dst != BACKENDS["A"]
    t.call("set_weight", "web", "A", 2)
    for sport in range(20, 26):
        t.syn(sport)
    t.consistent()
    sw = t.h.sw
    assert sw.flows_reused == 3
    assert sw.flows_created == sw.stats(0.0)["flows_opened_in_c"] == 12 + 3 + 7 + 6
    t.h.now += DEFAULT_TIMEOUTS[State.ESTABLISHED] + 1
    assert sw.expire(t.h.now) == 25
    t.consistent()
    assert len(sw.table) == 0


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


@pytest.mark.parametrize("scheduler", ["rr", "wrr"])
def test_weight_changes_give_the_python_schedulers_sequence(scheduler: str) -> None:
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
def test_any_conversation_is_opened_in_c_and_adds_up(
    mode: str, scheduler: str, actions: list[tuple[str, int, int]]
) -> None:
    # a table of 5 flows, 3 of them half-open at most: SYNs make room by eviction
    t = Talk(mode, scheduler, max_flows=5, max_half_open=3)
    for what, port, n in actions:
        if what == "syn":
            out = t.send("client", "S", sport=port, seq=100)
            if out is not None:
                t.syns[port] = out
        elif port in t.syns and what == "handshake":
            t.handshake(port)
        elif port in t.syns and what == "close":
            t.close(port)
        elif port in t.syns and what == "rst":
            t.send("backend", t.syns[port], "R", seq=501)
        elif what == "tick":
            t.tick(n * 20.0)
        elif what == "weight":
            t.call("set_weight", "web", "ABC"[port % 3], n)
        elif what == "expire":
            t.h.sw.expire(t.h.now)
        t.consistent()


def test_a_syn_flood_is_met_in_c_the_oldest_half_open_flows_making_room() -> None:
    t = Talk("fullnat", "rr", max_flows=8, max_half_open=3)
    t.syn(1)
    t.handshake(1)
    for sport in range(2, 30):  # SYNs that never finish their handshake
        t.syn(sport)
        t.tick()
    t.consistent()
    c = t.h.sw
    assert c.flows_evicted == 28 - 3 and c.stats(t.h.now)["half_open"] == 3
    assert c.stats(t.h.now)["flows_opened_in_c"] == 29  # every SYN, evictions included
    assert [r["client"].split(":")[1] for r in c.flows(t.h.now)] == ["1", "27", "28", "29"]
    assert (
        c.pool.in_use((bytes([192, 0, 2, 1]), 8080))
        + c.pool.in_use((bytes([192, 0, 2, 2]), 8080))
        + c.pool.in_use((bytes([192, 0, 2, 3]), 8080))
        == 4
    )


def test_a_full_table_gives_the_evicted_flow_s_slot_to_the_new_one_in_c() -> None:
    t = Talk("fullnat", "rr", max_flows=3, max_half_open=3)
    for sport in range(1, 8):  # the table is full from the third SYN on
        t.syn(sport)
        t.tick()
        t.consistent()
    c = t.h.sw
    assert c.flows_evicted == 4 and len(c.table) == 3
    assert c.stats(t.h.now)["flows_opened_in_c"] == 7
    assert [r["client"].split(":")[1] for r in c.flows(t.h.now)] == ["5", "6", "7"]
    t.handshake(7)
    t.consistent()


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
    # a fixed secret: twenty clients hashed under a random one miss A's sixth now and then
    h.sw = Switch([svc], snat=["203.0.113.1"], seed=3, hash_secret=b"the which test's secret")
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


def _with_acl(t: Talk, acl: CompiledAcl | None) -> None:
    (svc,) = t.h.sw.services
    svc.acl = acl
    t.h.sw._schedule_ahead(svc)  # as a reload does


@pytest.mark.parametrize("scheduler", ["rr", "iphash"])
def test_c_opens_what_an_access_list_permits_and_refuses_the_rest(
    scheduler: str,
) -> None:
    t = Talk("fullnat", scheduler)
    _with_acl(t, Acl(allow=("198.51.100.0/24",), deny=("198.51.100.7/32",)).compile())
    clients = ["198.51.100.2", "198.51.100.7", "192.0.2.200", "198.51.100.254", "203.0.113.50"]
    clients.append("198.51.100.9")
    for i, src in enumerate(clients):
        t.send("send", IP(src=src, dst=VIP) / TCP(sport=5000 + i, dport=80, flags="S", seq=1))
        t.tick()
    t.consistent()
    s = t.h.sw.stats(t.h.now)
    assert (s["acl_denied"], s["dropped"], s["flows"]) == ({"web": 3}, {"acl_denied": 3}, 3)
    assert s["flows_opened_in_c"] == 3  # every permitted client's
    opened = {r["client"].split(":")[0] for r in t.h.sw.flows(t.h.now)}
    assert opened == {"198.51.100.2", "198.51.100.254", "198.51.100.9"}
    if scheduler == "rr":  # a refused SYN takes no turn
        rows = sorted(t.h.sw.flows(t.h.now), key=lambda r: r["client"].split(":")[1])
        assert [r["backend"] for r in rows] == ["A", "B", "C"]
    # the list taken away (a reload): C opens a client it refused before
    _with_acl(t, None)
    t.send("send", IP(src="192.0.2.200", dst=VIP) / TCP(sport=6000, dport=80, flags="S", seq=1))
    t.consistent()
    assert t.h.sw.stats(t.h.now)["flows_opened_in_c"] == 4


def test_an_access_list_too_long_for_c_is_refused_and_the_old_one_stays() -> None:
    h = Harness()
    (svc,) = h.sw.services
    svc.acl = Acl(allow=("198.51.100.0/24",), deny=("198.51.100.7/32",)).compile()
    h.sw._schedule_ahead(svc)
    svc.acl = CompiledAcl(tuple((i << 8, 0xFFFFFF00) for i in range(lib.PKS_ACL_MAX + 1)), ())
    with pytest.raises(ValueError, match="65537 prefixes"):
        h.sw._schedule_ahead(svc)
    assert h.send(IP(src="198.51.100.7", dst=VIP) / TCP(sport=7000, dport=80, flags="S")) is None
    assert h.send(IP(src=CLIENT, dst=VIP) / TCP(sport=7001, dport=80, flags="S")) is not None
    assert h.sw.dropped == {"acl_denied": 1}


def test_services_numbered_past_16_bits_have_their_flows_opened_by_c() -> None:
    """A service holds its number while it or a flow of it lives, so many services at once
    (removed ones with flows left included) number new ones high: past 16 bits their flows
    are opened, listed and counted as the first ones'."""
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
    assert (s["flows_created"], s["flows_opened_in_c"]) == (2, 2)


@pytest.mark.parametrize("batch", [256, 1])
@pytest.mark.parametrize("scheduler", ["lc", "wlc"])
def test_a_least_loaded_syn_flood_is_met_in_c_with_the_reason_of_its_pick(
    scheduler: str, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the half-open share full, each SYN evicts the oldest half-open flow: C picks
    before it evicts, and Python, applying the events (the new flow, then the eviction, in
    one batch or two), writes the reason of the counts C picked on."""
    from pktswitch.core import switch

    monkeypatch.setattr(switch, "EVENT_BATCH", batch)
    t = Talk("fullnat", scheduler, max_flows=8, max_half_open=3)
    for sport in range(1, 10):
        t.syn(sport)
        t.tick()
        t.consistent()
    c = t.h.sw
    assert c.flows_evicted == 6 and c.stats(t.h.now)["flows_opened_in_c"] == 9
    # the seventh found flows 4 and 5 on A (4 the oldest, evicted after the pick), 6 on B
    (row,) = [r for r in c.flows(t.h.now) if r["client"].endswith(":7")]
    assert row["backend"] == "C"
    assert row["reason"] == (
        "lc: C 0+0 < B 0+1, +1 more"
        if scheduler == "lc"
        else "wlc: C 0+0 per 1=0.000 < B 0+1 per 1=0.004, +1 more"
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
        "1": "lc: A 0+0 <= B 0+0, +1 more (tie: first listed)",
        "2": "lc: B 0+0 <= C 0+0, +1 more (tie: first listed)",
        "3": "lc: X 0+0 <= Y 0+0, +1 more (tie: first listed)",
    }
    assert sw.stats(h.now)["flows_opened_in_c"] == 3
