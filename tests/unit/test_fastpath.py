"""The native drain loop: C reads, rewrites and writes established packets by itself and hands
the rest to Python, on a datagram socket pair standing in for the TUN device."""

from __future__ import annotations

import socket

from scapy.layers.inet import IP, TCP
from scapy.packet import Raw
from scapy_oracle import checksums_ok

from pktswitch.core.switch import ServiceState, Switch
from pktswitch.io.loop import Loop
from pktswitch.sched.base import make
from pktswitch.sched.pool import BackendState

VIP, CLIENT, SNAT = "203.0.113.10", "198.51.100.2", "203.0.113.1"


def test_native_drain_forwards_established_packets_and_leaves_the_rest_to_python() -> None:
    svc = ServiceState("web", VIP, 80, make("rr"), [BackendState("A", "192.0.2.1", 8080)])
    sw = Switch([svc], snat=[SNAT], seed=1, snat_start=0)
    tun, wire = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tun.setblocking(False)
    wire.settimeout(2)
    loop = Loop(sw, tun.fileno())
    assert loop.native

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
    # all but the SYN by C alone, the SYN-ACK's handshake time, the state changes (to
    # ESTABLISHED, CLOSE_WAIT) and the first response's timing included
    assert sw.fast == len(handshake) - 1 + len(established) + len(closing)
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
