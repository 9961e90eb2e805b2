"""The native drain loop: C reads, rewrites and writes established packets by itself and hands
the rest to Python, on a datagram socket pair standing in for the TUN device."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from pktswitch._native import lib
from scapy.layers.inet import IP, TCP
from scapy.packet import Raw
from scapy_oracle import checksums_ok

from pktswitch.core.switch import ServiceState, Switch
from pktswitch.io.loop import Loop
from pktswitch.sched.pool import BackendState
from pktswitch.sched.registry import make

VIP, CLIENT, SNAT = "203.0.113.10", "198.51.100.2", "203.0.113.1"


def _switch_on_socketpair(names: str = "A") -> tuple[Switch, Loop, socket.socket, socket.socket]:
    """A switch with backends A (192.0.2.1), B, ..., its loop on `tun`; the test plays the
    network on `wire`."""
    backends = [BackendState(n, f"192.0.2.{i}", 8080) for i, n in enumerate(names, 1)]
    svc = ServiceState("web", VIP, 80, make("rr"), backends)
    sw = Switch([svc], snat=[SNAT], seed=1, snat_start=0)
    tun, wire = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tun.setblocking(False)
    wire.settimeout(5)
    loop = Loop(sw, tun.fileno())
    assert loop.native
    return sw, loop, tun, wire


def test_native_drain_forwards_established_packets_and_leaves_the_rest_to_python() -> None:
    sw, loop, tun, wire = _switch_on_socketpair()

    def c(flags: str, seq: int, data: bytes = b"") -> IP:
        p = IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags=flags, seq=seq, ack=501)
        return p / Raw(data) if data else p

    def b(flags: str, data: bytes = b"") -> IP:
        p = IP(src="192.0.2.1", dst=SNAT) / TCP(sport=8080, dport=1024, flags=flags, seq=501)
        return p / Raw(data) if data else p

    handshake = [c("S", 100), b("SA"), c("A", 101), c("PA", 101, b"GET /"), b("PA", b"200 OK")]
    established = [c("A", 106), b("A"), c("PA", 106, b"more"), b("PA", b"more")] * 5
    closing = [c("FA", 110)]
    junk = [b"\x45" + bytes(10)]
    sent = [bytes(p) for p in handshake + established + closing] + junk
    for p in sent:
        wire.send(p)
    loop._drain()  # one turn: 27 packets, under the batch size
    out = [IP(wire.recv(65535)) for _ in range(len(sent) - 1)]
    assert all(checksums_ok(p) for p in out)
    assert [(p.src, p.dst) for p in out[:1]] == [(SNAT, "192.0.2.1")]
    assert {(p.src, p.dst) for p in out} == {(SNAT, "192.0.2.1"), (VIP, CLIENT)}
    assert bytes(out[3][Raw]) == b"GET /"  # order kept across the C and Python paths
    # every packet by C alone: the SYN (an rr service is scheduled ahead, core/ahead.py),
    # the SYN-ACK's handshake time, the state changes (to ESTABLISHED, CLOSE_WAIT) and the
    # first response's timing included
    assert sw.fast == len(handshake) + len(established) + len(closing)
    assert sw.flows_created == 1 and sw.stats(0.0)["flows_opened_in_c"] == 1
    s = sw.stats(0.0)
    assert (s["packets_in"], s["packets_forwarded"], s["dropped"]) == (
        len(sent),
        len(sent) - 1,
        {"short": 1},
    )
    (flow,) = sw.flows(0.0)
    assert flow["state"] == "CLOSE_WAIT" and flow["packets_in"] == 3 + 10 + 1
    (a,) = [b for b in sw.backends(0.0) if b["backend"] == "A"]
    assert (a["active"], a["inactive"], a["samples"]) == (0, 1, {"syn": 1, "data": 1, "probe": 0})
    assert loop.largest_read == max(len(p) for p in sent)
    tun.close()
    wire.close()


def _in_epoll_wait(tid: int) -> bool:
    """The thread `tid` of this process sleeps in epoll_wait (x86-64 or generic numbers)."""
    nr = Path(f"/proc/self/task/{tid}/syscall").read_text().split()[0]
    return nr in {"232", "281", "22"}  # x86-64 epoll_wait, epoll_pwait; generic epoll_pwait


def test_native_drain_waits_in_c_forwards_meanwhile_and_returns_for_another_fd() -> None:
    sw, loop, tun, wire = _switch_on_socketpair()
    served: list[int] = []
    other_r, other_w = os.pipe()
    loop.add_reader(other_r, served.append)

    syn = IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="S", seq=100)
    wire.send(bytes(syn))
    loop._drain_native(0.0)  # C opens the flow (its event is applied before C waits)
    assert IP(wire.recv(65535))[TCP].flags == "S"
    # the backend's SYN-ACK and the client's ACK leave events: C must not sleep on them
    synack = IP(src="192.0.2.1", dst=SNAT) / TCP(sport=8080, dport=1024, flags="SA", seq=500)
    ack = IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="A", seq=101, ack=501)
    wire.send(bytes(synack))
    wire.send(bytes(ack))
    t0 = time.monotonic()
    loop._drain_native(5.0)
    assert time.monotonic() - t0 < 1.0
    assert loop._result.status == lib.PKS_D_EMPTY and sw.fast == 3
    assert sw.flows(0.0)[0]["state"] == "ESTABLISHED"
    wire.recv(65535)
    wire.recv(65535)

    # nothing arrives: C sleeps the whole wait and hands back an empty device
    t0 = time.monotonic()
    loop._drain_native(0.2)
    assert time.monotonic() - t0 >= 0.2
    assert loop._result.status == lib.PKS_D_EMPTY and loop._result.forwarded == 0

    main = threading.get_native_id()

    def peer() -> None:
        for _ in range(5000):  # until C sleeps (bounded: 5 s)
            if _in_epoll_wait(main):
                break
            time.sleep(0.001)
        req = TCP(sport=40000, dport=80, flags="PA", seq=101, ack=501) / Raw(b"GET /")
        wire.send(bytes(IP(src=CLIENT, dst=VIP) / req))
        got.append(IP(wire.recv(65535)))  # forwarded by C while Python still waits on it
        os.write(other_w, b"x")

    got: list[IP] = []
    th = threading.Thread(target=peer)
    th.start()
    t0 = time.monotonic()
    loop._drain_native(5.0)
    th.join(5)
    assert time.monotonic() - t0 < 4.0
    assert loop._result.status == lib.PKS_D_OTHER and loop._result.forwarded == 1
    assert [(p.src, p.dst, p[TCP].dport) for p in got] == [(SNAT, "192.0.2.1", 8080)]
    assert served == []  # the loop's own select serves the other fd, not the drain
    assert loop.sel.select(0)[0][0].fd == other_r
    for fd in (other_r, other_w):
        os.close(fd)
    tun.close()
    wire.close()


def test_one_drain_opens_closes_and_reopens_a_reused_port_and_python_counts_it_all() -> None:
    sw, loop, tun, wire = _switch_on_socketpair("AB")  # rr's period in C: A, B

    def c(flags: str, seq: int, ack: int = 0) -> bytes:
        return bytes(
            IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags=flags, seq=seq, ack=ack)
        )

    def b(flags: str, seq: int, ack: int) -> bytes:
        p = IP(src="192.0.2.1", dst=SNAT) / TCP(
            sport=8080, dport=1024, flags=flags, seq=seq, ack=ack
        )
        return bytes(p)

    # a whole connection to A, then the same client port again (its flow is in TIME_WAIT)
    first = [c("S", 100), b("SA", 500, 101), c("A", 101, 501)]
    first += [c("FA", 101, 501), b("FA", 501, 102), c("A", 102, 502)]
    sent = [*first, c("S", 9000)]
    for p in sent:
        wire.send(p)
    loop._drain_native(0.0)  # one call: every packet by C, the events applied after it
    out = [IP(wire.recv(65535)) for _ in sent]
    assert all(checksums_ok(p) for p in out)
    assert (out[-1].dst, out[-1][TCP].seq) == ("192.0.2.2", 9000)  # the new flow, to B
    assert sw.fast == len(sent) and sw.flows_created == 2
    assert (sw.flows_reused, dict(sw.flows_expired)) == (1, {"TIME_WAIT": 1})
    a, bk = sw.services[0].backends
    assert (a.active, a.inactive, a.total, bk.active, bk.inactive, bk.total) == (0, 0, 1, 0, 1, 1)
    # the first flow: 4 packets in and 2 out (the last SYN is the new flow's, on B)
    assert (a.bytes_in, a.bytes_out, bk.bytes_in, bk.bytes_out) == (4 * 40, 2 * 40, 40, 0)
    assert sw.pool.in_use(a.endpoint) == 0 and sw.pool.in_use(bk.endpoint) == 1
    (row,) = sw.flows(0.0)
    assert (row["client"], row["backend"], row["state"]) == (f"{CLIENT}:40000", "B", "SYN_RECV")
    tun.close()
    wire.close()


class _BrokenCore:
    """A core whose expiry always raises, as a bug would."""

    def __init__(self) -> None:
        self.buf = bytearray(2048)
        self.drops: list[str] = []

    def process(self, length: int, now: float) -> bool:
        return False

    def out_length(self) -> int:
        return 0

    def count_drop(self, reason: str) -> None:
        self.drops.append(reason)

    def expire(self, now: float) -> int:
        raise RuntimeError("a bug in expiry")

    def next_due(self) -> float | None:
        return 0.0  # due at once: the loop never sleeps


def test_a_bug_in_expiry_or_a_deadline_is_counted_and_the_loop_goes_on() -> None:
    tun, wire = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        loop = Loop(_BrokenCore(), tun.fileno(), clock=lambda: 1.0)
        turns = []

        def broken_deadline() -> float | None:
            raise RuntimeError("a bug in a deadline")

        def count_turns() -> None:
            turns.append(1)
            if len(turns) == 3:
                loop.stop()

        loop.deadlines.append(broken_deadline)
        loop.idle.append(count_turns)
        loop.run()  # returns: the loop survived three turns of both bugs
        assert len(turns) == 3
        assert loop.internal_errors == 6  # each turn: the deadline, then expiry
    finally:
        tun.close()
        wire.close()
