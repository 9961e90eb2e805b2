"""The C core and the Python core survive any input: fuzz seeds and regressions, and hypothesis.

Every file in native/fuzz/corpus (the seeds tools/fuzz.sh starts from) and native/fuzz/regressions
(inputs that once crashed the libFuzzer harness) is replayed here through the compiled module
(pks_parse, pks_process on a fresh table) and through Switch.process, as a bare IP packet and
behind a virtio_net_hdr. Hypothesis then throws arbitrary bytes and mutated valid packets at
Switch.process. What must hold for every packet:
- process never raises, and the packet is counted exactly once (forwarded or dropped by reason);
- a packet the parser rejects is dropped with the parser's reason, and its bytes are untouched;
- a dropped packet's bytes are untouched; a forwarded one keeps its length, still parses, and
  its TCP checksum is still valid if it was before.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pktswitch._native import ffi, lib
from scapy.layers.inet import IP, TCP, IPOption_NOP
from scapy.packet import Raw
from scapy.utils import checksum

from pktswitch.core import packet
from pktswitch.core.switch import ServiceState, Switch
from pktswitch.sched.pool import BackendState
from pktswitch.sched.registry import make

ROOT = Path(__file__).resolve().parents[2]
FUZZ_DIRS = (ROOT / "native" / "fuzz" / "corpus", ROOT / "native" / "fuzz" / "regressions")
INPUTS = sorted(p for d in FUZZ_DIRS if d.is_dir() for p in d.iterdir() if p.is_file())

CLIENT, VIP, SNAT = "198.51.100.2", "203.0.113.10", "203.0.113.1"
BACKENDS = {"A": "192.0.2.1", "B": "192.0.2.2"}
VNET = lib.PKS_VNET_HDR_LEN
GUARD = 16  # bytes after the packet in the switch's buffer that nothing may write


def make_switch(vnet: bool) -> Switch:
    backends = [BackendState(n, ip, 8080) for n, ip in BACKENDS.items()]
    svc = ServiceState("web", VIP, 80, make("rr"), backends)
    return Switch([svc], mode="fullnat", snat=[SNAT], max_flows=16, seed=7, vnet=vnet, snat_start=0)


def parse(data: bytes, vnet: bool) -> Any:
    """pks_parse (or pks_parse_vnet) of a copy of data: the meta."""
    buf = bytearray(data)
    m = ffi.new("pks_meta *")
    cb = ffi.from_buffer("uint8_t[]", buf, require_writable=True)
    err = (lib.pks_parse_vnet if vnet else lib.pks_parse)(cb, len(buf), m)
    assert err == m.err and 0 <= err < lib.PKS_E_COUNT
    assert bytes(buf) == data
    return m


def tcp_checksum_ok(ip: bytes, m: Any) -> bool:
    """The full TCP checksum, pseudo-header included, verifies (RFC 1071 by scapy)."""
    l4 = ip[m.l4_off : m.ip_len]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(l4))
    return checksum(pseudo + l4) == 0


def push(sw: Switch, data: bytes, now: float) -> bool:
    """One packet through sw.process, checked against the invariants of the module docstring."""
    vnet = bool(sw.vnet)
    m = parse(data, vnet)
    n = len(data)
    guard = bytes(sw.buf[n : n + GUARD])
    sw.buf[:n] = data
    forwarded, dropped = sw.forwarded, sum(sw.dropped.values())

    out = sw.process(n, now)

    assert isinstance(out, bool)
    assert sw.forwarded + sum(sw.dropped.values()) == forwarded + dropped + 1
    stats = sw.stats(now)
    assert stats["packets_in"] == stats["packets_forwarded"] + stats["packets_dropped"]
    assert bytes(sw.buf[n : n + GUARD]) == guard
    if m.err != lib.PKS_OK:
        assert not out, "a malformed packet was forwarded"
        assert sw.last_drop == packet.PARSE_ERRORS[m.err]
    if not out:
        assert sw.forwarded == forwarded
        assert sw.last_drop in sw.dropped
        assert bytes(sw.buf[:n]) == data, "a dropped packet was modified"
        return False
    assert sw.forwarded == forwarded + 1
    after = bytes(sw.buf[:n])
    m2 = parse(after, vnet)  # still a well-formed packet of the same shape
    assert m2.err == lib.PKS_OK
    assert (m2.ip_len, m2.l4_off, m2.payload, m2.tcp_flags) == (
        m.ip_len,
        m.l4_off,
        m.payload,
        m.tcp_flags,
    )
    h = m.hdr
    assert after[:h] == data[:h], "the virtio_net_hdr was modified"
    if not m.partial:
        ok = tcp_checksum_ok(data[h:], m)
        assert tcp_checksum_ok(after[h:], m) == ok
    return True


# ------------------------------------------------------------------ seeds and regressions


@pytest.mark.parametrize("vnet", [False, True], ids=["ip", "vnet"])
@pytest.mark.parametrize("path", INPUTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_native_survives_fuzz_input(path: Path, vnet: bool) -> None:
    data = path.read_bytes()
    m = parse(data, vnet)
    if m.err != lib.PKS_OK:
        assert packet.PARSE_ERRORS[m.err] not in ("ok", "unknown")
    tab = lib.pks_table_new(8, 1)
    assert tab != ffi.NULL
    tab = ffi.gc(tab, lib.pks_table_free)
    buf = bytearray(data)  # exactly the input's length
    cb = ffi.from_buffer("uint8_t[]", buf, require_writable=True)
    pm = ffi.new("pks_meta *")
    verdict = lib.pks_process(tab, cb, len(buf), 1.0, pm, int(vnet))
    if m.err != lib.PKS_OK:
        assert verdict == lib.PKS_V_DROP and pm.err == m.err
    elif m.key.proto == packet.PROTO_ICMP:  # no VIP to answer, no flow an error is about
        assert verdict == lib.PKS_V_DROP and pm.slot == -1
        assert packet.PARSE_ERRORS[pm.err].startswith("icmp_")
    elif m.key.proto == packet.PROTO_UDP:  # nor a UDP service a datagram opens a flow of
        assert verdict == lib.PKS_V_DROP and pm.slot == -1
        assert packet.PARSE_ERRORS[pm.err] in ("no_service", "bad_source", "udp_checksum")
    else:  # an empty table knows no flow, and has no state grid to open one
        assert verdict == lib.PKS_V_SLOW and pm.slot == -1 and pm.err == lib.PKS_OK
    assert bytes(buf) == data
    assert tab.nkeys == 0


@pytest.mark.parametrize("vnet", [False, True], ids=["ip", "vnet"])
@pytest.mark.parametrize("path", INPUTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_switch_survives_fuzz_input(path: Path, vnet: bool) -> None:
    push(make_switch(vnet), path.read_bytes(), 1000.0)


@pytest.mark.parametrize("vnet", [False, True], ids=["ip", "vnet"])
def test_switch_survives_all_fuzz_inputs_in_a_row(vnet: bool) -> None:
    sw = make_switch(vnet)
    for i, path in enumerate(INPUTS):
        push(sw, path.read_bytes(), 1000.0 + i)
    assert sw.rx == len(INPUTS)


def test_seed_corpus_is_there() -> None:
    """tools/fuzz.sh needs seeds; the replay above is empty without them."""
    seeds = [p for p in INPUTS if p.parent == FUZZ_DIRS[0]]
    assert len(seeds) >= 20
    parsed = [p for p in seeds if parse(p.read_bytes(), False).err == lib.PKS_OK]
    assert len(parsed) >= 5  # valid packets as well as malformed ones


# ----------------------------------------------------------------------------- hypothesis


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=1600), min_size=1, max_size=4), st.booleans())
def test_switch_survives_arbitrary_bytes(packets: list[bytes], vnet: bool) -> None:
    sw = make_switch(vnet)
    for i, data in enumerate(packets):
        push(sw, data, 1000.0 + i)


def vnet_header(draw: Any) -> bytes:
    """A virtio_net_hdr: well formed (NEEDS_CSUM or not) or ten arbitrary bytes."""
    kind = draw(st.sampled_from(["none", "none", "csum", "raw"]))
    if kind == "raw":
        return draw(st.binary(min_size=VNET, max_size=VNET))
    if kind == "none":
        return struct.pack("<BBHHHH", 0, 0, 0, 0, 0, 0)
    return struct.pack("<BBHHHH", 1, 0, 0, 0, draw(st.sampled_from([20, 24, 0])), 16)


# A connection as it would go through the switch (client to the VIP, the first backend's
# replies to the first SNAT port), so that runs reach flow creation, the state table, the
# measurement and the fast path; each packet may then be mutated.
CONVERSATION = [
    ("client", "S", b""),
    ("backend", "SA", b""),
    ("client", "A", b""),
    ("client", "PA", b"GET / HTTP/1.0\r\n\r\n"),
    ("backend", "PA", b"HTTP/1.0 200 OK\r\n\r\n"),
    ("client", "A", b""),
    ("backend", "PA", b"body"),
    ("client", "FA", b""),
    ("backend", "FA", b""),
    ("client", "A", b""),
]
FLAGS = ["S", "SA", "A", "PA", "FA", "R", "RA", "F", "SF", ""]


@st.composite
def mutated_packet(draw: Any, side: str, flags: str, payload: bytes, vnet: bool) -> bytes:
    """The packet built by scapy (sometimes with other flags, ports, options or payload),
    then, sometimes, bytes flipped or overwritten, cut short or extended; when mutated, the IP
    header checksum is usually fixed afterwards so that the mutation reaches the TCP parser."""
    sport, dport = (40000, 80) if side == "client" else (8080, 1024)
    if draw(st.integers(0, 3)) == 0:  # a different packet on the same path
        flags = draw(st.sampled_from(FLAGS))
        payload = draw(st.binary(max_size=64))
        if side == "client":
            sport = draw(st.sampled_from([40000, 40001]))
        else:
            dport = draw(st.sampled_from([1024, 1025]))
    src, dst = (CLIENT, VIP) if side == "client" else (BACKENDS["A"], SNAT)
    ip_opts = [IPOption_NOP()] * draw(st.sampled_from([0, 0, 4]))
    tcp_opts = draw(st.sampled_from([[], [("MSS", 1460)], [("NOP", None), ("WScale", 7)]]))
    p = IP(src=src, dst=dst, options=ip_opts) / TCP(
        sport=sport, dport=dport, flags=flags, seq=1000, ack=2000, options=tcp_opts
    )
    raw = bytearray(bytes(p / Raw(payload) if payload else p))
    mutations = draw(st.sampled_from([0, 0, 1, 2, 4]))
    for _ in range(mutations):
        i = draw(st.integers(0, len(raw) - 1))
        if draw(st.booleans()):
            raw[i] ^= 1 << draw(st.integers(0, 7))
        else:
            raw[i] = draw(st.integers(0, 255))
    cut = draw(st.sampled_from(["keep", "keep", "truncate", "extend"]))
    if cut == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif cut == "extend":
        raw += draw(st.binary(min_size=1, max_size=32))
    if mutations and len(raw) >= 20 and draw(st.integers(0, 3)) > 0:
        ihl = (raw[0] & 0x0F) * 4
        if 20 <= ihl <= len(raw):
            raw[10:12] = b"\0\0"
            raw[10:12] = struct.pack("!H", checksum(bytes(raw[:ihl])))
    return (vnet_header(draw) if vnet else b"") + bytes(raw)


@st.composite
def mutated_runs(draw: Any) -> tuple[bool, list[bytes]]:
    """A prefix of CONVERSATION, each packet possibly mutated, as bare IP or behind a
    virtio_net_hdr."""
    vnet = draw(st.booleans())
    steps = CONVERSATION[: draw(st.integers(1, len(CONVERSATION)))]
    return vnet, [draw(mutated_packet(*step, vnet)) for step in steps]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_runs())
def test_switch_survives_mutated_packets(run: tuple[bool, list[bytes]]) -> None:
    vnet, packets = run
    sw = make_switch(vnet)
    for i, data in enumerate(packets):
        push(sw, data, 1000.0 + i)
