"""Tracing (core/tracing.py, native/trace.c): C records each packet it decides on, before and
after its rewrite, with the verdict and the state move; the switch hands the records to the
subscribers. scapy decodes and checks what the records hold."""

from __future__ import annotations

import base64
import socket

from pktswitch._native import ffi, lib
from scapy.layers.inet import IP, TCP
from scapy.packet import Raw
from test_fastpath import _switch_on_socketpair
from test_offload import (
    CLIENT,
    NEEDS_CSUM,
    SNAT,
    VIP,
    finish,
    push,
    scapy_recomputed,
    switch,
    vnet_header,
    with_partial_checksum,
)

from pktswitch.control.streams import event
from pktswitch.core.trace import HEADERS_SNAP as MIN_SNAP
from pktswitch.core.trace import Subscription


def test_a_partial_checksum_is_finished_in_the_copies_cut_to_the_snaplen() -> None:
    sw = switch(vnet=True)
    sub = Subscription(snaplen=0)
    sw.subscribe(sub)
    syn = IP(src=CLIENT, dst=VIP) / TCP(sport=4000, dport=80, flags="S", seq=7)
    assert push(sw, vnet_header(NEEDS_CSUM, 0, 0, 0, 20) + with_partial_checksum(syn))
    data = IP(src=CLIENT, dst=VIP) / TCP(sport=4000, dport=80, flags="PA", seq=8) / Raw(b"x" * 900)
    out = push(sw, vnet_header(NEEDS_CSUM, 0, 40, 0, 20) + with_partial_checksum(data))
    assert out is not None
    rec = sub.queue[-1]
    assert (rec.length, len(rec.before), rec.finished) == (940, MIN_SNAP, True)
    assert rec.after is not None and len(rec.after) == MIN_SNAP
    # what the wire carries: the device's finished checksum, over the whole packet, in C's copy
    wire_in, wire_out = finish(with_partial_checksum(data)), finish(out[10:])
    assert wire_in == bytes(data)  # (scapy agrees with the device)
    assert rec.before == wire_in[:MIN_SNAP]
    assert rec.after == wire_out[:MIN_SNAP]
    assert IP(wire_out)[TCP].chksum == scapy_recomputed(wire_out)[TCP].chksum
    ev = event(rec, 1, 0, 0.0)
    assert ev["before"]["len"] == ev["after"]["len"] == 940
    assert ev["offload"] == {"partial_checksum": True, "gso_type": 0, "gso_size": 0}
    assert ev["before"]["tcp_csum"] == IP(wire_in)[TCP].chksum
    assert ev["raw_before"] == ""  # snaplen 0: the subscriber keeps no bytes
    sw.unsubscribe(sub)
    assert sw.table.tab.trace_cap == 0


def test_a_trace_keeps_the_headers_unless_it_asks_for_more() -> None:
    """A trace stream left at its default keeps 128 bytes of each packet (every header it
    shows), the packet's length told whole; one asking for 65535 keeps all of it. C copies
    what the largest asker wants."""
    from pktswitch.control.streams import TraceStream

    sw = switch(vnet=False)
    short, whole = (
        TraceStream(sw, {}, lambda: 1.0),
        TraceStream(sw, {"snaplen": 65535}, lambda: 1.0),
    )
    assert (short.sub.snaplen, whole.sub.snaplen) == (MIN_SNAP, 65535)
    syn = IP(src=CLIENT, dst=VIP) / TCP(sport=4000, dport=80, flags="S", seq=7)
    assert push(sw, bytes(syn))
    data = IP(src=CLIENT, dst=VIP) / TCP(sport=4000, dport=80, flags="PA", seq=8) / Raw(b"x" * 900)
    assert push(sw, bytes(data)) is not None
    sw.take_trace()
    (_, cut), (_, full) = short.poll(10), whole.poll(10)
    assert base64.b64decode(cut["raw_before"]) == bytes(data)[:MIN_SNAP]
    assert base64.b64decode(full["raw_before"]) == bytes(data)
    assert cut["before"]["len"] == full["before"]["len"] == 940
    sw.unsubscribe(short.sub)
    sw.unsubscribe(whole.sub)


def test_a_record_c_has_no_room_for_is_counted_as_lost() -> None:
    sw = switch(vnet=False)
    sub = Subscription()
    sw.subscribe(sub)
    # a buffer with room for one record (of a 40-byte packet), not taken between packets
    size = lib.pks_trace_size(40, 40)
    small = ffi.new("uint64_t[]", size // 8)
    assert lib.pks_trace_set(sw.table.tab, ffi.cast("uint8_t *", small), size, 40) == 0
    sw._trace = small
    for sport in (5001, 5002, 5003):
        syn = bytes(IP(src=CLIENT, dst=VIP) / TCP(sport=sport, dport=80, flags="S"))
        sw.buf[: len(syn)] = syn
        assert type(sw).process(sw, len(syn), 1.0)  # forwarded, traced or not
    sw.take_trace()
    assert [r.flow for r in sub.queue] == [(f"{CLIENT}:5001", "s", "A")]
    assert sub.lost == 2 and sw.table.tab.trace_lost == 2
    sw.unsubscribe(sub)


def test_the_native_drain_records_what_it_forwards_while_tracing() -> None:
    sw, loop, tun, wire = _switch_on_socketpair("AB")
    sub = Subscription(client=(socket.inet_aton(CLIENT), 40001))
    sw.subscribe(sub)
    syn = IP(src=CLIENT, dst=VIP) / TCP(sport=40001, dport=80, flags="S", seq=100)
    other = IP(src=CLIENT, dst=VIP) / TCP(sport=40002, dport=80, flags="S", seq=100)
    synack = IP(src="192.0.2.1", dst=SNAT) / TCP(sport=8080, dport=1024, flags="SA", seq=9, ack=101)
    stray = IP(src=CLIENT, dst=VIP) / TCP(sport=40001, dport=81, flags="S")
    for p in (syn, other, synack, stray):
        wire.send(bytes(p))
    loop._drain_native(0.0)
    assert sw.fast == 3 and sw.stats(0.0)["to_python"] == {}  # every packet C's, traced
    got = [(r.verdict, r.transition, r.flow) for r in sub.queue]
    assert got == [
        ("fast", ("NONE", "SYN_RECV"), (f"{CLIENT}:40001", "web", "A")),
        ("fast", None, (f"{CLIENT}:40001", "web", "A")),  # the SYN-ACK: still SYN_RECV
        ("drop:no_service", None, None),
    ]
    assert bytes(IP(sub.queue[0].before)) == bytes(syn)
    after = IP(sub.queue[0].after)
    assert (after.src, after.dst, after[TCP].sport, after[TCP].dport) == (
        SNAT,
        "192.0.2.1",
        1024,
        8080,
    )
    assert sw.table.tab.trace_used == 0  # all taken after the batch
    sw.unsubscribe(sub)
    tun.close()
    wire.close()
