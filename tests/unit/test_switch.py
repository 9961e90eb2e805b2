"""The switch core on scapy-built packets with a fake clock; scapy is the checksum oracle."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pktswitch._native import lib
from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Raw
from scapy_oracle import checksums_ok

from pktswitch.core.acl import Acl
from pktswitch.core.switch import ServiceState, Switch
from pktswitch.core.tcpstate import DEFAULT_TIMEOUTS, State
from pktswitch.sched.pool import BackendState
from pktswitch.sched.registry import make

CLIENT, VIP, SNAT = "198.51.100.2", "203.0.113.10", "203.0.113.1"
BACKENDS = {"A": "192.0.2.1", "B": "192.0.2.2", "C": "192.0.2.3"}


def service(names: str = "ABC", port: int = 80, scheduler: str = "rr") -> ServiceState:
    backends = [BackendState(n, BACKENDS[n], 8080) for n in names]
    return ServiceState("web", VIP, port, make(scheduler), backends)


def push(sw: Switch, pkt: IP, now: float) -> IP | None:
    """pkt through sw at `now`: what it writes (as long as it says, parsed by scapy), or None
    when it drops the packet, which must then be left as it came."""
    raw = bytes(pkt)
    sw.buf[: len(raw)] = raw
    if not sw.process(len(raw), now):
        assert sw.buf[: len(raw)] == raw, "a dropped packet must not be modified"
        return None
    return IP(bytes(sw.buf[: sw.out_length()]))


class Harness:
    """Feeds packets through a Switch and returns what it would write, parsed by scapy."""

    def __init__(
        self, mode: str = "fullnat", names: str = "ABC", scheduler: str = "rr", **kw: object
    ) -> None:
        timeouts = dict(DEFAULT_TIMEOUTS)
        timeouts.update(kw.pop("timeouts", {}))  # type: ignore[call-overload]
        self.sw = Switch(
            [service(names, scheduler=scheduler)],
            mode=mode,
            snat=[SNAT] if mode == "fullnat" else [],
            timeouts=timeouts,
            seed=7,
            snat_start=0,
            hash_secret=b"the harness's secret",  # (two harnesses hash clients alike)
            **kw,  # type: ignore[arg-type]
        )
        self.now = 1000.0

    def send(self, pkt: IP | bytes) -> IP | None:
        raw = bytes(pkt)
        self.sw.buf[: len(raw)] = raw
        if not self.sw.process(len(raw), self.now):
            assert self.sw.buf[: len(raw)] == raw, "a dropped packet must not be modified"
            return None
        return IP(bytes(self.sw.buf[: len(raw)]))

    def client(self, flags: str, sport: int = 40000, **kw: object) -> IP | None:
        payload = kw.pop("payload", b"")
        p = IP(src=CLIENT, dst=VIP) / TCP(sport=sport, dport=80, flags=flags, **kw)
        return self.send(p / Raw(payload) if payload else p)

    def backend(self, out: IP, flags: str, **kw: object) -> IP | None:
        """The backend's answer to a packet the switch sent it."""
        payload = kw.pop("payload", b"")
        t = out[TCP]
        p = IP(src=out.dst, dst=out.src) / TCP(sport=t.dport, dport=t.sport, flags=flags, **kw)
        return self.send(p / Raw(payload) if payload else p)

    def handshake(self, sport: int = 40000) -> IP:
        syn = self.client("S", sport, seq=100)
        assert syn is not None
        assert self.backend(syn, "SA", seq=500, ack=101) is not None
        assert self.client("A", sport, seq=101, ack=501) is not None
        return syn

    def flow(self, sport: int = 40000) -> dict[str, object]:
        (row,) = [r for r in self.sw.flows(self.now) if r["client"] == f"{CLIENT}:{sport}"]
        return row


def test_fullnat_syn_rewrite_exact() -> None:
    h = Harness()
    opts = [("MSS", 1460), ("SAckOK", b""), ("WScale", 7)]
    out = h.client("S", seq=12345, window=64240, options=opts)
    assert out is not None
    assert (out.src, out.dst, out[TCP].sport, out[TCP].dport) == (SNAT, "192.0.2.1", 1024, 8080)
    assert checksums_ok(out)
    # everything else is as the client sent it
    assert (out.ttl, out.id, out[TCP].seq, out[TCP].window) == (64, 1, 12345, 64240)
    assert out[TCP].flags == "S"
    assert out[TCP].options[:3] == opts  # scapy pads the options with EOL


def test_reply_is_rewritten_back_to_the_vip() -> None:
    h = Harness()
    syn = h.client("S", seq=100)
    assert syn is not None
    synack = h.backend(syn, "SA", seq=900, ack=101)
    assert synack is not None
    assert (synack.src, synack[TCP].sport, synack.dst, synack[TCP].dport) == (
        VIP,
        80,
        CLIENT,
        40000,
    )
    assert checksums_ok(synack)
    assert synack[TCP].seq == 900 and synack[TCP].ack == 101


def test_round_robin_over_30_new_flows() -> None:
    h = Harness()
    order = []
    for i in range(30):
        out = h.client("S", sport=41000 + i)
        assert out is not None
        order.append(out.dst)
    assert order == [BACKENDS[n] for n in "ABC"] * 10
    assert Counter(r["backend"] for r in h.sw.flows(h.now)) == {"A": 10, "B": 10, "C": 10}


def test_states_follow_the_conversation_and_c_moves_them_from_the_syn_on() -> None:
    h = Harness()
    syn = h.client("S", seq=100)
    assert syn is not None
    assert h.flow()["state"] == "SYN_RECV"
    assert h.sw.fast == 1  # the client's SYN, opened by C (rr is scheduled ahead)
    h.backend(syn, "SA", seq=500, ack=101)
    assert h.flow()["state"] == "SYN_RECV"
    assert h.sw.fast == 2  # the backend's SYN-ACK, C's (reported for the handshake time)
    h.client("A", seq=101, ack=501)
    assert h.flow()["state"] == "ESTABLISHED"
    assert h.sw.fast == 3
    (a,) = [b for b in h.sw.backends(h.now) if b["backend"] == "A"]
    assert (a["active"], a["inactive"]) == (1, 0)  # C's counts, read through
    assert h.sw.table.load(h.sw.table.backends.get(h.sw.services[0].backends[0])) == (1, 0)
    out = h.client("PA", seq=101, ack=501, payload=b"GET / HTTP/1.1\r\n\r\n")
    assert out is not None and checksums_ok(out) and bytes(out[Raw]) == b"GET / HTTP/1.1\r\n\r\n"
    back = h.backend(syn, "PA", seq=501, ack=119, payload=b"HTTP/1.1 200 OK\r\n\r\n")
    assert back is not None and checksums_ok(back)
    assert h.client("A", seq=119, ack=520) is not None
    h.client("FA", seq=119, ack=520)
    assert h.flow()["state"] == "CLOSE_WAIT"
    h.backend(syn, "FA", seq=520, ack=120)
    assert h.flow()["state"] == "TIME_WAIT"
    assert h.sw.fast == 8  # everything, by C alone
    (a,) = [b for b in h.sw.backends(h.now) if b["backend"] == "A"]
    assert (a["active"], a["inactive"], a["samples"]) == (0, 1, {"syn": 1, "data": 1, "probe": 0})
    row = h.flow()
    assert (row["packets_in"], row["packets_out"]) == (5, 3)
    assert row["bytes_in"] == 40 + 40 + 58 + 40 + 40 and row["bytes_out"] == 40 + 59 + 40


@pytest.mark.parametrize(
    ("pkt", "reason"),
    [
        # what parses but opens no flow: test_decisions.py
        (IP(src=CLIENT, dst=VIP) / UDP(sport=1, dport=80), "no_service"),
        (IP(src=CLIENT, dst=VIP, proto=132) / Raw(bytes(12)), "protocol"),
        (bytes(IP(src=CLIENT, dst=VIP) / TCP(sport=1, dport=80, flags="S"))[:30], "total_length"),
        (b"\x60" + bytes(39), "ip_version"),
        (b"", "short"),
    ],
)
def test_unknown_or_bad_packets_are_counted_and_dropped(pkt: IP | bytes, reason: str) -> None:
    h = Harness()
    assert h.send(pkt) is None
    assert h.sw.dropped == {reason: 1}
    assert h.sw.flows(h.now) == []


def test_handshake_and_first_response_times_are_measured() -> None:
    h = Harness()
    syn = h.client("S", seq=100)
    h.now += 0.002
    h.backend(syn, "SA", seq=500, ack=101)
    h.now += 0.001
    h.client("A", seq=101, ack=501)
    h.client("PA", seq=101, ack=501, payload=b"GET /")
    h.now += 0.050
    h.backend(syn, "A", seq=501, ack=106)  # an ACK without data is not the response
    h.now += 0.010
    h.backend(syn, "PA", seq=501, ack=106, payload=b"HTTP/1.1 200 OK")
    (a,) = [b for b in h.sw.backends(h.now) if b["backend"] == "A"]
    assert a["samples"] == {"syn": 1, "data": 1, "probe": 0}
    assert a["rtt_syn_ms"] == 2.0 and a["rt_data_ms"] == 60.0
    assert a["rt_ms"] == pytest.approx(2.0 + (60.0 - 2.0) / 8)  # both, smoothed (alpha 1/8)


def test_a_one_way_transfer_stays_on_the_fast_path_without_a_sample() -> None:
    h = Harness()
    h.handshake()
    for i in range(30):
        h.client("PA", seq=101 + i * 10, ack=501, payload=b"x" * 10)
    assert h.sw.fast == 3 + 30  # the handshake, then every data packet
    (a,) = [b for b in h.sw.backends(h.now) if b["backend"] == "A"]
    assert a["rt_data_ms"] is None and a["samples"]["data"] == 0


def test_lrt_sends_a_slow_backend_clearly_less() -> None:
    """C answers 50 ms later than A and B; 60 sequential requests, each measured as it goes.
    Unmeasured backends are tried first (A, B, C), and C, once measured, gets no more."""
    h = Harness(scheduler="lrt")
    delay = {BACKENDS["A"]: 0.001, BACKENDS["B"]: 0.001, BACKENDS["C"]: 0.051}
    got: Counter[str] = Counter()
    for i in range(60):
        sport = 30000 + i
        syn = h.client("S", sport, seq=1)
        assert syn is not None
        got[syn.dst] += 1
        h.now += 0.0002
        h.backend(syn, "SA", seq=1, ack=2)
        h.client("PA", sport, seq=2, ack=2, payload=b"GET /")
        h.now += delay[syn.dst]
        h.backend(syn, "PA", seq=2, ack=7, payload=b"HTTP/1.1 200 OK")
        h.client("R", sport, seq=7)  # done: CLOSE, expired 10 s later
        h.now += 0.01
    assert got[BACKENDS["C"]] == 1, got
    assert min(got[BACKENDS["A"]], got[BACKENDS["B"]]) >= 29, got
    (c,) = [b for b in h.sw.backends(h.now) if b["backend"] == "C"]
    assert c["rt_data_ms"] == pytest.approx(51.0)


def test_lrt_sends_two_slow_backends_of_three_nothing_once_measured() -> None:
    """B and C answer 50 ms later than A. Every backend is scored: once each is measured (the
    first three flows, unmeasured scoring 0), the fast one takes every flow. (Two random
    choices would send a third of them to B or C: a draw of the two slow ones.)"""
    h = Harness(scheduler="lrt")
    delay = {BACKENDS["A"]: 0.001, BACKENDS["B"]: 0.051, BACKENDS["C"]: 0.051}
    order = []
    for i in range(30):
        sport = 31000 + i
        syn = h.client("S", sport, seq=1)
        assert syn is not None
        order.append(syn.dst)
        h.now += 0.0002
        h.backend(syn, "SA", seq=1, ack=2)
        h.client("PA", sport, seq=2, ack=2, payload=b"GET /")
        h.now += delay[syn.dst]
        h.backend(syn, "PA", seq=2, ack=7, payload=b"HTTP/1.1 200 OK")
        h.client("R", sport, seq=7)
        h.now += 0.01
    assert order[:3] == [BACKENDS["A"], BACKENDS["B"], BACKENDS["C"]], order
    assert order[3:] == [BACKENDS["A"]] * 27, order


def test_a_retransmitted_syn_gives_no_handshake_sample() -> None:
    h = Harness()
    syn = h.client("S", seq=100)
    h.now += 1
    h.client("S", seq=100)
    h.backend(syn, "SA", seq=500, ack=101)
    (a,) = [b for b in h.sw.backends(h.now) if b["backend"] == "A"]
    assert a["samples"]["syn"] == 0  # Karn: which SYN is this SYN-ACK answering?


def test_syn_retransmit_keeps_its_backend() -> None:
    h = Harness()
    first = h.client("S", seq=100)
    again = h.client("S", seq=100)
    assert first is not None and again is not None
    assert (again.dst, again[TCP].sport) == (first.dst, first[TCP].sport)
    assert h.sw.flows_created == 1


def test_idle_expiry_on_time_per_state() -> None:
    h = Harness()
    h.client("S", seq=100)
    h.now += DEFAULT_TIMEOUTS[State.SYN_RECV] - 0.001
    assert h.sw.expire(h.now) == 0
    h.now += 0.001
    assert h.sw.expire(h.now) == 1
    assert h.sw.flows_expired == {"SYN_RECV": 1}
    assert h.sw.flows(h.now) == []
    (backend,) = [b for b in h.sw.services[0].backends if b.name == "A"]
    assert (backend.active, backend.inactive, backend.total) == (0, 0, 1)
    assert h.sw.pool.in_use(backend.endpoint) == 0


def test_traffic_on_the_fast_path_keeps_a_flow_alive() -> None:
    h = Harness(timeouts={State.ESTABLISHED: 10})
    syn = h.handshake()
    for _ in range(5):
        h.now += 6
        assert h.sw.expire(h.now) == 0
        assert h.backend(syn, "A", seq=501, ack=101) is not None  # fast path refresh
    assert h.flow()["expires_in"] == 10
    h.now += 10
    assert h.sw.expire(h.now) == 1


def test_shorter_timeout_after_a_state_change_applies() -> None:
    h = Harness(timeouts={State.ESTABLISHED: 100, State.CLOSE: 2})
    h.handshake()
    h.client("R", seq=101)
    assert h.flow()["state"] == "CLOSE"
    h.now += 2
    assert h.sw.expire(h.now) == 1


def test_syn_reusing_a_time_wait_flow_is_scheduled_anew() -> None:
    h = Harness(timeouts={State.TIME_WAIT: 120})
    syn = h.handshake()
    h.client("FA", seq=101, ack=501)
    h.backend(syn, "FA", seq=501, ack=102)
    assert h.flow()["state"] == "TIME_WAIT"
    again = h.client("S", seq=99999)  # the client reuses port 40000 for a new connection
    assert again is not None
    assert again.dst == BACKENDS["B"], "the new connection is scheduled, not sent to A"
    assert h.flow()["state"] == "SYN_RECV"
    assert h.sw.flows_reused == 1
    assert h.sw.flows_expired == {"TIME_WAIT": 1}
    assert len(h.sw.flows(h.now)) == 1


def test_syn_on_an_established_flow_does_not_reschedule() -> None:
    h = Harness()
    syn = h.handshake()
    again = h.client("S", seq=100)
    assert again is not None and again.dst == syn.dst
    assert h.sw.flows_created == 1


def test_nat_mode_rewrites_only_the_destination() -> None:
    h = Harness(mode="nat")
    out = h.client("S", seq=100)
    assert out is not None
    assert (out.src, out[TCP].sport, out.dst, out[TCP].dport) == (CLIENT, 40000, "192.0.2.1", 8080)
    assert checksums_ok(out)
    back = h.backend(out, "SA", seq=7, ack=101)
    assert back is not None
    assert (back.src, back[TCP].sport, back.dst, back[TCP].dport) == (VIP, 80, CLIENT, 40000)
    assert checksums_ok(back)
    assert h.flow()["snat"] is None


def test_snat_ports_come_back_least_recently_used() -> None:
    h = Harness(names="A", snat_ports=(2000, 2002), timeouts={State.SYN_RECV: 1})
    ports = [h.client("S", sport=50000 + i)[TCP].sport for i in range(3)]  # type: ignore[index]
    assert ports == [2000, 2001, 2002]
    h.now += 0.5
    late = h.client("S", sport=50003)  # the pool is empty: the oldest half-open flow's pair
    assert late is not None and late[TCP].sport == 2000
    assert (h.sw.dropped, h.sw.flows_reclaimed) == ({}, {"SYN_RECV": 1})
    h.now += 0.5
    assert h.sw.expire(h.now) == 2
    h.now += 0.5
    assert h.sw.expire(h.now) == 1
    again = [h.client("S", sport=50010 + i)[TCP].sport for i in range(3)]  # type: ignore[index]
    assert again == [2001, 2002, 2000]  # freed in that order, reused oldest first
    assert h.sw.pool.early_reuse == 4  # within the backend's TIME_WAIT: counted, all four


def test_a_new_switch_starts_its_snat_ports_at_a_random_point() -> None:
    """A restarted switch must not walk the backends' recent TIME_WAITs from port 1024 again."""
    firsts = set()
    for _ in range(5):
        sw = Switch([service("A")], snat=[SNAT])
        syn = bytes(IP(src=CLIENT, dst=VIP) / TCP(sport=1, dport=80, flags="S"))
        sw.buf[: len(syn)] = syn
        assert sw.process(len(syn), 1.0)
        firsts.add(IP(bytes(sw.buf[: len(syn)]))[TCP].sport)
    assert len(firsts) > 1


def test_table_limit() -> None:
    h = Harness(max_flows=2)
    h.handshake(sport=1)
    h.handshake(sport=2)
    assert h.client("S", sport=3) is None
    assert h.sw.dropped == {"table_full": 1}
    assert [r["state"] for r in h.sw.flows(h.now)] == ["ESTABLISHED", "ESTABLISHED"]


def ports_and_states(h: Harness) -> list[tuple[int, str]]:
    return [(int(str(r["client"]).split(":")[1]), str(r["state"])) for r in h.sw.flows(h.now)]


def test_half_open_flows_are_bounded_and_the_oldest_make_room() -> None:
    h = Harness(max_flows=4, max_half_open=2)
    h.handshake(sport=1)
    first = h.client("S", sport=2)
    assert first is not None
    h.now += 1
    assert h.client("S", sport=3) is not None
    h.now += 1
    assert h.client("S", sport=4) is not None  # the half-open limit: sport 2 goes
    assert ports_and_states(h) == [(1, "ESTABLISHED"), (3, "SYN_RECV"), (4, "SYN_RECV")]
    assert (h.sw.flows_evicted, dict(h.sw.flows_expired)) == (1, {})
    assert h.backend(first, "SA", seq=9, ack=1) is None  # the evicted flow is gone
    assert h.sw.dropped == {"no_flow": 1}
    s = h.sw.stats(h.now)
    assert (s["half_open"], s["half_open_peak"], s["max_half_open"]) == (2, 2, 2)
    # a finished handshake leaves the half-open set: the next SYN evicts nobody
    h.now += 1  # (flows opened at one instant are listed in slot order, not opening order)
    h.handshake(sport=5)  # evicts 3
    assert h.sw.flows_evicted == 2
    assert ports_and_states(h) == [(1, "ESTABLISHED"), (4, "SYN_RECV"), (5, "ESTABLISHED")]
    assert h.client("S", sport=6) is not None
    assert h.sw.flows_evicted == 2 and h.sw.stats(h.now)["half_open"] == 2


def test_a_full_table_gives_a_new_syn_the_place_of_the_oldest_half_open_flow() -> None:
    h = Harness(max_flows=3, max_half_open=3)
    h.handshake(sport=1)
    h.handshake(sport=2)
    assert h.client("S", sport=3) is not None
    assert h.client("S", sport=4) is not None  # table full, not the half-open share
    assert ports_and_states(h) == [(1, "ESTABLISHED"), (2, "ESTABLISHED"), (4, "SYN_RECV")]
    assert h.sw.flows_evicted == 1 and h.sw.dropped == {}
    assert h.sw.stats(h.now)["half_open"] == 1


def test_many_evictions_leave_no_stale_timers_behind() -> None:
    """Evicted flows must not stay alive in the timer heap until their deadlines."""
    h = Harness(max_flows=100, max_half_open=10, timeouts={State.SYN_RECV: 5})
    heap_sizes = []
    for i in range(3000):
        h.send(IP(src=CLIENT, dst=VIP) / TCP(sport=1000 + i, dport=80, flags="S"))
        heap_sizes.append(h.sw.table.tab.heap_len)
    assert h.sw.flows_evicted == 2990 and len(h.sw.table) == 10
    assert max(heap_sizes) <= lib.PKS_COMPACT_MIN + 11
    h.now += 5
    assert h.sw.expire(h.now) == 10
    assert len(h.sw.table) == 0 and dict(h.sw.flows_expired) == {"SYN_RECV": 10}


def test_acl_refuses_denied_and_unlisted_clients_on_their_syn() -> None:
    svc = service()
    svc.acl = Acl(allow=("198.51.100.0/24",), deny=("198.51.100.7/32",)).compile()
    sw = Switch([svc], snat=[SNAT], seed=1, snat_start=0)
    seen = {}
    for src in ("198.51.100.2", "198.51.100.7", "192.0.2.200", "198.51.100.254"):
        syn = bytes(IP(src=src, dst=VIP) / TCP(sport=5000, dport=80, flags="S"))
        sw.buf[: len(syn)] = syn
        seen[src] = sw.process(len(syn), 1.0)
        if not seen[src]:
            assert bytes(sw.buf[: len(syn)]) == syn
    assert seen == {
        "198.51.100.2": True,
        "198.51.100.7": False,
        "192.0.2.200": False,
        "198.51.100.254": True,
    }
    s = sw.stats(1.0)
    assert (s["dropped"], s["acl_denied"], s["flows"]) == ({"acl_denied": 2}, {"web": 2}, 2)


def test_every_packet_is_forwarded_or_dropped_once() -> None:
    h = Harness()
    h.handshake()
    h.client("A", sport=9)
    h.send(b"junk")
    s = h.sw.stats(h.now)
    assert s["packets_in"] == s["packets_forwarded"] + sum(s["dropped"].values()) == 5


ipv4 = st.ip_addresses(v=4).map(str)
# a client's address: not 0/8, loopback, multicast or 240/4, whose SYNs C drops (bad_source)
client_ipv4 = ipv4.filter(
    lambda a: int(a.split(".")[0]) not in (0, 127) and int(a.split(".")[0]) < 224
)
port = st.integers(1, 65535)


@settings(max_examples=200, deadline=None)
@given(
    client=client_ipv4,
    cport=port,
    vport=port,
    bport=port,
    flags=st.sampled_from(["A", "PA", "FA", "RA", "R"]),
    payload=st.binary(max_size=300),
    mode=st.sampled_from(["fullnat", "nat"]),
    ttl=st.integers(1, 255),
    ipid=st.integers(0, 65535),
)
def test_rewrites_are_exact_in_both_directions(
    client: str,
    cport: int,
    vport: int,
    bport: int,
    flags: str,
    payload: bytes,
    mode: str,
    ttl: int,
    ipid: int,
) -> None:
    if client in (VIP, SNAT, *BACKENDS.values()):
        return
    svc = ServiceState("s", VIP, vport, make("rr"), [BackendState("A", "192.0.2.1", bport)])
    sw = Switch([svc], mode=mode, snat=[SNAT], seed=3, snat_start=0)
    syn = bytes(IP(src=client, dst=VIP) / TCP(sport=cport, dport=vport, flags="S"))
    sw.buf[: len(syn)] = syn
    assert sw.process(len(syn), 1.0)
    first = IP(bytes(sw.buf[: len(syn)]))
    pkts = [
        (
            IP(src=client, dst=VIP, ttl=ttl, id=ipid) / TCP(sport=cport, dport=vport, flags=flags),
            (first.src, first[TCP].sport, "192.0.2.1", bport),
        ),
        (
            IP(src="192.0.2.1", dst=first.src, ttl=ttl, id=ipid)
            / TCP(sport=bport, dport=first[TCP].sport, flags=flags),
            (VIP, vport, client, cport),
        ),
    ]
    for pkt, (src, sport, dst, dport) in pkts:
        raw = bytes(pkt / Raw(payload)) if payload else bytes(pkt)
        sw.buf[: len(raw)] = raw
        assert sw.process(len(raw), 2.0)
        out = IP(bytes(sw.buf[: len(raw)]))
        assert (out.src, out[TCP].sport, out.dst, out[TCP].dport) == (src, sport, dst, dport)
        assert checksums_ok(out)
        # only addresses, ports and the two checksums changed
        a, b = bytearray(raw), bytearray(bytes(out))
        for off in (10, 11, *range(12, 20), 20, 21, 22, 23, 36, 37):
            a[off] = b[off] = 0
        assert a == b


def test_a_syn_that_is_dropped_evicts_nobody() -> None:
    h = Harness(max_flows=10, max_half_open=1, names="A")
    assert h.client("S", sport=1) is not None
    h.sw.set_weight("web", "A", 0, h.now)  # no backend takes new flows
    assert h.client("S", sport=2) is None
    assert h.sw.dropped == {"no_backend": 1} and h.sw.flows_evicted == 0
    assert ports_and_states(h) == [(1, "SYN_RECV")]


def test_a_lowered_half_open_limit_is_met_at_the_next_syn() -> None:
    h = Harness(max_flows=10, max_half_open=5)
    for sport in range(1, 6):
        assert h.client("S", sport=sport) is not None
    h.sw.table.max_half_open = 2  # what a reload does
    assert h.client("S", sport=6) is not None
    assert h.sw.flows_evicted == 4
    assert sorted(ports_and_states(h)) == [(5, "SYN_RECV"), (6, "SYN_RECV")]


def test_flows_keep_nothing_per_flow_in_python_and_views_know_when_their_flow_ended() -> None:
    h = Harness(names="A", max_flows=4, max_half_open=4)
    for sport in range(1, 5):
        h.client("S", sport=sport)
    table = h.sw.table
    old = next(iter(table))
    assert old.alive and old.client[1] == 1 and old.state == State.SYN_RECV
    # four flows of one backend (rr): one reason text, held by each and by rr's program
    assert len(table.reasons) == 1 and table.reasons._refs == [5]
    h.now += DEFAULT_TIMEOUTS[State.SYN_RECV] + 1
    assert h.sw.expire(h.now) == 4 and len(table) == 0
    assert table.reasons._refs == [1]  # the program's
    assert table.tab.ho.count == 0 and table.tab.heap_len == 0
    assert not old.alive
    h.client("S", sport=9)  # takes a freed slot: maybe the old view's
    (new,) = list(table)
    assert new.alive and not old.alive and new != old
    assert new.client[1] == 9 and len(table.reasons) == 1


def test_a_switch_s_backend_reads_its_counts_from_c_which_alone_sets_them() -> None:
    h = Harness()
    a = h.sw.services[0].backends[0]
    assert h.client("S", seq=100) is not None  # rr: A
    n = h.sw.table.backends.get(a)
    assert n is not None
    c = h.sw.table.tab.bk_load[n]
    assert (a.active, a.inactive, a.total) == (c.active, c.inactive, c.total) == (0, 1, 1)
    with pytest.raises(AttributeError, match="counted by the switch's C table"):
        a.active = 5
    c.total = 41  # (what C counts is what A shows)
    assert a.total == 41
