"""`flows` walks the table a bounded span per loop turn (control/streams.py): every flow once,
the `limit` oldest with a limit, and never the whole table in one turn."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from test_switch import SNAT, VIP, service

from pktswitch.control.streams import SCAN_SPAN, FlowsStream
from pktswitch.core.switch import Switch

SLOTS = 64 * SCAN_SPAN  # (room for 3000 flows)


def filled(n: int) -> Switch:
    """n half-open flows from clients 198.51.x.y, the k-th in slot k, each opened 1 ms
    before the one before it: age order is the slots' reversed."""
    sw = Switch([service()], snat=[SNAT], seed=1, snat_start=0, max_flows=SLOTS)
    sw.table.max_half_open = SLOTS
    for k in range(n):
        syn = bytes(
            IP(src=f"198.51.{100 + k // 250}.{1 + k % 250}", dst=VIP) / TCP(dport=80, flags="S")
        )
        sw.buf[: len(syn)] = syn
        assert sw.process(len(syn), 2000.0 - k * 0.001)
    return sw


def drain(stream: FlowsStream) -> tuple[list[dict[str, object]], int]:
    rows, polls = [], 0
    while not stream.done():
        rows += stream.poll(256)
        polls += 1
    return rows, polls


def test_every_flow_once_a_span_a_turn() -> None:
    sw = filled(3000)
    rows, polls = drain(FlowsStream(sw, {}, lambda: 2001.0))
    assert len(rows) == 3000 and len({r["client"] for r in rows}) == 3000
    assert polls >= SLOTS // SCAN_SPAN  # at most one span of slots looked at a turn
    assert polls <= SLOTS // SCAN_SPAN + 3000 // 256 + 1


def test_a_limit_gives_the_oldest_first() -> None:
    sw = filled(3000)
    rows, polls = drain(FlowsStream(sw, {"limit": 3}, lambda: 2001.0))
    # the flows were opened newest-first by slot: the oldest are the last three opened
    assert [r["client"] for r in rows] == [f"198.51.111.{k}:20" for k in (250, 249, 248)]
    assert polls >= SLOTS // SCAN_SPAN


def test_filters_and_flows_that_end_meanwhile() -> None:
    sw = filled(10)
    stream = FlowsStream(sw, {"backend": "A"}, lambda: 2001.0)
    gone = next(f for f in sw.table if f.backend.name == "A")
    sw._expire(gone, 2001.0)
    rows, _ = drain(stream)
    assert {r["backend"] for r in rows} == {"A"} and len(rows) == 4 - 1  # A: flows 0, 3, 6, 9
