"""Tests of the C core (native/) through its cffi module, with scapy as the oracle.

Packets are built with scapy and checked with scapy (and scapy.utils.checksum, an RFC 1071
implementation independent of ours); the flow index is held against a Python dict model.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pktswitch._native import ffi, lib
from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP, IPOption_RR, in4_chksum
from scapy.packet import Raw
from scapy.utils import checksum

from pktswitch.core.tcpstate import INPUT, OUTPUT, TRANSITIONS, Event, State, next_state

EMPTY = 0xFFFFFFFF
CLIENT, VIP, LOCAL, BACKEND = "198.51.100.2", "203.0.113.10", "10.0.0.1", "10.0.0.21"

# ----------------------------------------------------------------------------- helpers


def packed(addr: str) -> bytes:
    return ipaddress.IPv4Address(addr).packed


def tcp(
    src: str = CLIENT,
    dst: str = VIP,
    sport: int = 40312,
    dport: int = 80,
    flags: str | int = "A",
    payload: bytes = b"",
    ip_opts: list[Any] | None = None,
    tcp_opts: list[Any] | None = None,
    seq: int = 1000,
    ack: int = 2000,
    **ip_fields: Any,
) -> bytearray:
    """A TCP/IPv4 packet built (and checksummed) by scapy, as a writable buffer."""
    ip = IP(src=src, dst=dst, options=ip_opts or [], **ip_fields)
    seg = TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, options=tcp_opts or [])
    pkt = ip / seg / Raw(payload) if payload else ip / seg
    return bytearray(bytes(pkt))


def cbuf(buf: bytearray) -> Any:
    return ffi.from_buffer("uint8_t[]", buf, require_writable=True)


def parse(buf: bytearray) -> Any:
    m = ffi.new("pks_meta *")
    rc = lib.pks_parse(cbuf(buf), len(buf), m)
    assert rc == m.err
    return m


def err_name(err: int) -> str:
    return ffi.string(lib.pks_err_name(err)).decode()


def make_key(src: str, sport: int, dst: str, dport: int, proto: int = 6) -> Any:
    k = ffi.new("pks_key *")
    k.family, k.proto, k.sport, k.dport = 4, proto, sport, dport
    ffi.memmove(k.saddr, packed(src), 4)
    ffi.memmove(k.daddr, packed(dst), 4)
    return k


def flow_nat(t: Any, slot: int, d: int) -> Any:
    n = ffi.new("pks_nat *")
    lib.pks_flow_nat(t, slot, d, n)
    return n


def make_nat(src: str, sport: int, dst: str, dport: int) -> Any:
    n = ffi.new("pks_nat *")
    ffi.memmove(n.saddr, packed(src), 4)
    ffi.memmove(n.daddr, packed(dst), 4)
    n.sport, n.dport = sport, dport
    return n


def key_bytes(src: str, sport: int, dst: str, dport: int) -> bytes:
    """The exact bytes of an IPv4/TCP pks_key (pad 0, addresses zero-extended to 16 bytes)."""
    return struct.pack("=BBHHH16s16s", 4, 6, sport, dport, 0, packed(src), packed(dst))


def raw(cdata: Any) -> bytes:
    """The bytes of a cdata array, pointer or struct (a struct field or array item)."""
    if ffi.typeof(cdata).kind == "struct":
        cdata = ffi.addressof(cdata)
    return ffi.buffer(cdata)[:]


def new_table(nslots: int, seed: int = 1) -> Any:
    t = lib.pks_table_new(nslots, seed)
    assert t != ffi.NULL
    return ffi.gc(t, lib.pks_table_free)


def index_snapshot(t: Any) -> bytes:
    return ffi.buffer(t.index, (t.mask + 1) * 4)[:]


def flows_snapshot(t: Any) -> bytes:
    return ffi.buffer(t.flows, t.nslots * ffi.sizeof("pks_flow"))[:]


def scapy_fixed(out: bytes) -> Any:
    """scapy's own recomputation of both checksums of `out`."""
    p = IP(out)
    del p.chksum
    del p[TCP].chksum
    return IP(bytes(p))


def assert_rewritten(
    before: bytes, after: bytes, src: str, sport: int, dst: str, dport: int
) -> None:
    """after == before with src/dst/sport/dport replaced and both checksums right (per scapy)."""
    assert len(after) == len(before)
    p = IP(after)
    assert (p.src, p.dst, p[TCP].sport, p[TCP].dport) == (src, dst, sport, dport)
    ihl = (before[0] & 0x0F) * 4
    tot = struct.unpack_from("!H", before, 2)[0]
    may_change = {10, 11, *range(12, 20), *range(ihl, ihl + 4), ihl + 16, ihl + 17}
    for i in range(len(before)):
        if i not in may_change:
            assert after[i] == before[i], f"byte {i} changed"
    ref = scapy_fixed(after)
    assert p.chksum == ref.chksum
    assert p[TCP].chksum == ref[TCP].chksum
    assert bytes(ref) == after[:tot]
    # a second, direct check: header and pseudo-header + segment sum to zero
    assert checksum(after[:ihl]) == 0
    assert in4_chksum(6, p, after[ihl:tot]) == 0


# ----------------------------------------------------------------------------- pks_csum


def csum(data: bytes, start: int = 0) -> int:
    return lib.pks_csum(data, len(data), start)


def test_csum_known_vectors_ip_tcp() -> None:
    b = bytes(IP() / TCP())
    p = IP(b)
    assert (p.chksum, p[TCP].chksum) == (0x7CCD, 0x917C)
    assert csum(b[:20]) == 0  # a correct header sums to 0xffff
    hdr = bytearray(b[:20])
    hdr[10:12] = b"\0\0"
    assert csum(bytes(hdr)) == 0x7CCD
    # TCP: the pseudo-header passed in as the starting partial sum
    pseudo = packed("127.0.0.1") * 2 + struct.pack("!BBH", 0, 6, 20)
    start = sum(struct.unpack("!6H", pseudo))
    seg = bytearray(b[20:])
    seg[16:18] = b"\0\0"
    assert csum(bytes(seg), start) == 0x917C
    assert csum(b[20:], start) == 0


@pytest.mark.parametrize(
    "data",
    [b"", b"\x01", b"\x01\x02", b"\x01\x02\x03", b"\xff" * 7, b"\xab\xcd\xef", bytes(range(255))],
)
def test_csum_vectors_vs_scapy(data: bytes) -> None:
    assert csum(data) == checksum(data)


def test_csum_empty_and_zero() -> None:
    assert csum(b"") == 0xFFFF
    assert csum(bytes(9)) == 0xFFFF
    assert csum(b"\xff\xff") == 0x0000


def test_csum_full_32bit_start() -> None:
    # 0xffffffff == 65537 words of 0xffff: the partial sum must not overflow
    data = b"\x12\x34\x56"
    assert csum(data, 0xFFFFFFFF) == checksum(b"\xff\xff" * 65537 + data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1600), st.lists(st.integers(0, 0xFFFF), max_size=32))
def test_csum_matches_scapy(data: bytes, words: list[int]) -> None:
    assert csum(data) == checksum(data)
    pre = struct.pack(f"!{len(words)}H", *words)
    assert csum(data, sum(words)) == checksum(pre + data)


# ----------------------------------------------------------------------------- pks_parse


def test_parse_valid_tcp_fields() -> None:
    buf = tcp(CLIENT, VIP, 40312, 80, flags="PA", payload=b"hello")
    before = bytes(buf)
    p = IP(before)
    m = parse(buf)
    assert bytes(buf) == before
    assert m.err == lib.PKS_OK == 0
    assert err_name(m.err) == "ok"
    assert m.slot == -1 and m.dir == 0
    assert m.key.family == 4 and m.key.proto == 6
    assert (m.key.sport, m.key.dport, m.key.pad) == (40312, 80, 0)
    assert raw(m.key.saddr) == packed(CLIENT) + bytes(12)
    assert raw(m.key.daddr) == packed(VIP) + bytes(12)
    assert raw(m.key) == key_bytes(CLIENT, 40312, VIP, 80)
    assert m.tcp_flags == int(p[TCP].flags) == lib.PKS_TCP_PSH | lib.PKS_TCP_ACK
    assert m.ip_len == len(before) == 45
    assert m.l4_off == 20
    assert m.payload == 5
    assert m.ip_csum == p.chksum
    assert m.l4_csum == p[TCP].chksum


def test_parse_ip_and_tcp_options() -> None:
    ip_opts = [IPOption_RR(routers=["192.0.2.1", "192.0.2.2"])]  # 11 bytes -> ihl 8
    tcp_opts = [("MSS", 1460), ("NOP", None), ("WScale", 7), ("SAckOK", b"")]  # 12 -> doff 8
    buf = tcp(flags="S", payload=b"xyz", ip_opts=ip_opts, tcp_opts=tcp_opts)
    p = IP(bytes(buf))
    assert p.ihl == 8 and p[TCP].dataofs == 8
    m = parse(buf)
    assert m.err == lib.PKS_OK
    assert m.l4_off == 32
    assert m.ip_len == len(buf) == 32 + 32 + 3
    assert m.payload == 3
    assert m.tcp_flags == lib.PKS_TCP_SYN
    assert raw(m.key) == key_bytes(CLIENT, 40312, VIP, 80)
    assert m.l4_csum == p[TCP].chksum


@pytest.mark.parametrize("nops", [1, 4, 5, 40])
def test_parse_l4_off_follows_ihl(nops: int) -> None:
    buf = tcp(ip_opts=[IPOption_NOP()] * nops)
    ihl = IP(bytes(buf)).ihl
    assert ihl >= 6
    m = parse(buf)
    assert m.err == lib.PKS_OK
    assert m.l4_off == ihl * 4
    assert m.payload == 0


def test_parse_all_tcp_flags_and_df() -> None:
    assert parse(tcp(flags=0xFF)).tcp_flags == 0xFF
    assert parse(tcp(flags=0)).tcp_flags == 0
    df = bytearray(bytes(IP(src=CLIENT, dst=VIP, flags="DF") / TCP(flags="A")))
    assert parse(df).err == lib.PKS_OK  # DF is not a fragment


def test_parse_minimal_segment_exactly_20_bytes() -> None:
    m = parse(tcp())
    assert m.err == lib.PKS_OK
    assert (m.ip_len, m.l4_off, m.payload) == (40, 20, 0)


def test_parse_trailing_bytes_use_total_length() -> None:
    pkt = tcp(payload=b"abcd")
    buf = bytearray(bytes(pkt) + b"\xee" * 13)
    m = parse(buf)
    assert m.err == lib.PKS_OK
    assert m.ip_len == len(pkt) == 44
    assert m.payload == 4


def _set(buf: bytes, off: int, value: bytes) -> bytearray:
    b = bytearray(buf)
    b[off : off + len(value)] = value
    return b


def _with_ip_csum(buf: bytearray) -> bytearray:
    """Recompute the IP header checksum with scapy after a raw edit."""
    ihl = (buf[0] & 0x0F) * 4
    buf[10:12] = b"\0\0"
    buf[10:12] = struct.pack("!H", checksum(bytes(buf[:ihl])))
    return buf


BASE = bytes(IP(src=CLIENT, dst=VIP) / TCP(sport=40312, dport=80, flags="A"))

MALFORMED: list[tuple[str, bytes, str]] = [
    ("empty", b"", "short"),
    ("19 bytes", BASE[:19], "short"),
    ("version 6", bytes(IP(version=6) / TCP()), "ip_version"),
    ("ihl 4", bytes(IP(ihl=4) / TCP()), "ihl"),
    ("ihl 0", _set(BASE, 0, b"\x40"), "ihl"),
    ("ihl beyond buffer", _set(BASE, 0, b"\x4f"), "short"),
    ("ihl 4 bytes beyond buffer", _set(BASE[:20], 0, b"\x46"), "short"),
    ("ihl beyond total length", _with_ip_csum(_set(BASE + bytes(20), 0, b"\x4f")), "total_length"),
    ("total length > buffer", bytes(IP(len=41) / TCP()), "total_length"),
    ("total length < ihl", bytes(IP(len=19) / TCP()), "total_length"),
    ("total length 0", bytes(IP(len=0) / TCP()), "total_length"),
    ("bad ip checksum", bytes(IP(chksum=0x1234) / TCP()), "ip_checksum"),
    ("checksum off by one", _set(BASE, 11, bytes([BASE[11] ^ 1])), "ip_checksum"),
    ("MF fragment", bytes(IP(flags="MF") / TCP()), "fragment"),
    ("fragment offset", bytes(IP(frag=1) / TCP()), "fragment"),
    ("last fragment", bytes(IP(flags="DF", frag=0x1FFF) / TCP()), "fragment"),
    ("sctp", bytes(IP(proto=132) / Raw(bytes(12))), "protocol"),
    ("udp_7_bytes", bytes(IP(proto=17) / Raw(bytes(7))), "l4_short"),
    ("udp length 7", bytes(IP() / UDP(len=7)), "udp_length"),
    ("udp length past the packet", bytes(IP() / UDP(len=9)), "udp_length"),
    ("gre", bytes(IP(proto=47) / Raw(bytes(20))), "protocol"),
    ("icmp_7_bytes", bytes(IP(proto=1) / Raw(bytes(7))), "l4_short"),
    ("no tcp header", bytes(IP(proto=6)), "l4_short"),
    ("tcp header 19 bytes", bytes(IP(proto=6) / Raw(bytes(19))), "l4_short"),
    ("tcp header cut by total length", bytes(IP(len=39) / TCP()), "l4_short"),
    ("data offset 4", bytes(IP() / TCP(dataofs=4)), "tcp_data_offset"),
    ("data offset 0", bytes(IP() / TCP(dataofs=0)), "tcp_data_offset"),
    ("data offset 6, no options", bytes(IP() / TCP(dataofs=6)), "tcp_data_offset"),
    ("data offset 15", bytes(IP() / TCP(dataofs=15) / Raw(bytes(39))), "tcp_data_offset"),
]


@pytest.mark.parametrize(
    ("data", "expected"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_parse_malformed(data: bytes, expected: str) -> None:
    buf = bytearray(data)
    m = parse(buf)
    assert err_name(m.err) == expected
    assert m.err != lib.PKS_OK
    assert m.slot == -1
    assert bytes(buf) == data


def test_parse_data_offset_15_fits() -> None:
    # the boundary just above the last malformed case: 40 option bytes present
    buf = bytearray(bytes(IP() / TCP(dataofs=15) / Raw(bytes(40))))
    m = parse(buf)
    assert m.err == lib.PKS_OK
    assert m.payload == 0


def test_parse_every_truncation_fails() -> None:
    full = bytes(tcp(payload=b"0123456789", tcp_opts=[("MSS", 1400)]))
    for n in range(len(full)):
        m = parse(bytearray(full[:n]))
        assert err_name(m.err) == ("short" if n < 20 else "total_length"), n


def test_parse_resets_meta_on_error() -> None:
    m = ffi.new("pks_meta *")
    good = tcp(flags="PA", payload=b"x")
    assert lib.pks_parse(cbuf(good), len(good), m) == lib.PKS_OK
    bad = bytearray(bytes(IP(proto=132) / Raw(bytes(20))))
    m.slot, m.dir = 5, 1
    assert lib.pks_parse(cbuf(bad), len(bad), m) == lib.PKS_E_PROTO
    assert (m.slot, m.dir, m.tcp_flags, m.payload) == (-1, 0, 0, 0)
    assert raw(m.key) == bytes(40)


def test_err_names() -> None:
    names = [
        "ok", "short", "ip_version", "ihl", "total_length", "ip_checksum",
        "fragment", "protocol", "l4_short", "tcp_data_offset", "vnet_header",
        "no_flow", "no_service", "acl_denied", "no_backend", "table_full", "snat_exhausted",
        "tuple_busy", "icmp_checksum", "icmp_other", "icmp_malformed", "icmp_no_flow",
        "bad_source", "tcp_checksum", "icmp_rate", "icmp_out_of_window",
        "rst_out_of_window", "fin_out_of_window", "tcp_out_of_window",
        "client_max_flows", "client_rate", "clients_full", "bad_cookie", "icmp_misaddressed",
        "udp_length", "udp_checksum",
    ]  # fmt: skip
    assert len(names) == lib.PKS_E_COUNT
    assert [err_name(i) for i in range(lib.PKS_E_COUNT)] == names
    assert err_name(lib.PKS_E_TCPOFF) == "tcp_data_offset"
    assert err_name(-1) == err_name(lib.PKS_E_COUNT) == "unknown"


# ----------------------------------------------------------------------------- pks_rewrite


def rewrite(buf: bytearray, src: str, sport: int, dst: str, dport: int) -> None:
    m = parse(buf)
    assert m.err == lib.PKS_OK
    lib.pks_rewrite(cbuf(buf), m, make_nat(src, sport, dst, dport))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"payload": b"a"},
        {"payload": b"GET / HTTP/1.0\r\n\r\n"},
        {"ip_opts": [IPOption_NOP()] * 3, "tcp_opts": [("MSS", 1460), ("WScale", 7)]},
        {"flags": "S", "tos": 0xB8, "ttl": 1, "id": 0xFFFF},
    ],
)
def test_rewrite_scapy_packets(kwargs: dict[str, Any]) -> None:
    buf = tcp(CLIENT, VIP, 40312, 80, **kwargs)
    before = bytes(buf)
    rewrite(buf, LOCAL, 61000, BACKEND, 8080)
    assert_rewritten(before, bytes(buf), LOCAL, 61000, BACKEND, 8080)


def test_rewrite_to_same_values_is_identity() -> None:
    buf = tcp(CLIENT, VIP, 40312, 80, payload=b"abc")
    before = bytes(buf)
    rewrite(buf, CLIENT, 40312, VIP, 80)
    assert bytes(buf) == before


def test_rewrite_leaves_trailing_bytes() -> None:
    pkt = bytes(tcp(payload=b"abc"))
    buf = bytearray(pkt + b"\x55" * 7)
    rewrite(buf, "0.0.0.0", 0, "255.255.255.255", 65535)
    assert bytes(buf[len(pkt) :]) == b"\x55" * 7
    assert_rewritten(pkt, bytes(buf[: len(pkt)]), "0.0.0.0", 0, "255.255.255.255", 65535)


def _payload_for_tcp_csum_zero(src: str, sport: int, dst: str, dport: int) -> bytes:
    """A 2-byte payload with which scapy's TCP checksum of this packet is 0x0000."""
    c = IP(bytes(tcp(src, dst, sport, dport, payload=b"\0\0")))[TCP].chksum
    payload = struct.pack("!H", c)
    assert IP(bytes(tcp(src, dst, sport, dport, payload=payload)))[TCP].chksum == 0
    return payload


def test_rewrite_result_checksum_zero() -> None:
    # the rewritten packet's TCP checksum is 0x0000 (not its twin 0xffff)
    payload = _payload_for_tcp_csum_zero(LOCAL, 61000, BACKEND, 8080)
    buf = tcp(CLIENT, VIP, 40312, 80, payload=payload)
    before = bytes(buf)
    rewrite(buf, LOCAL, 61000, BACKEND, 8080)
    assert IP(bytes(buf))[TCP].chksum == 0
    assert_rewritten(before, bytes(buf), LOCAL, 61000, BACKEND, 8080)


def test_rewrite_from_checksum_zero() -> None:
    payload = _payload_for_tcp_csum_zero(CLIENT, 40312, VIP, 80)
    buf = tcp(CLIENT, VIP, 40312, 80, payload=payload)
    assert IP(bytes(buf))[TCP].chksum == 0
    before = bytes(buf)
    rewrite(buf, LOCAL, 61000, BACKEND, 8080)
    assert_rewritten(before, bytes(buf), LOCAL, 61000, BACKEND, 8080)


def _ip_id_for_checksum(src: str, dst: str, target: int) -> int:
    """An IP id with which scapy's header checksum of src -> dst is `target` (checked)."""
    s0 = ~IP(bytes(IP(src=src, dst=dst, id=0) / TCP())).chksum & 0xFFFF  # sum without the id
    ident = (~target & 0xFFFF) + (~s0 & 0xFFFF)  # id = wanted sum - s0, in ones' complement
    ident = (ident & 0xFFFF) + (ident >> 16)
    assert IP(bytes(IP(src=src, dst=dst, id=ident) / TCP())).chksum == target
    return ident


@pytest.mark.parametrize("target", [0x0000, 0x0001, 0x7FFF, 0xFFFE])
def test_rewrite_ip_checksum_extremes(target: int) -> None:
    ident = _ip_id_for_checksum(BACKEND, LOCAL, target)
    buf = tcp(VIP, CLIENT, 80, 40312, id=ident)
    before = bytes(buf)
    rewrite(buf, BACKEND, 8080, LOCAL, 61000)
    assert IP(bytes(buf)).chksum == target
    assert_rewritten(before, bytes(buf), BACKEND, 8080, LOCAL, 61000)


ipv4s = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ports = st.integers(0, 0xFFFF)
ip_options = st.one_of(
    st.just([]),
    st.integers(1, 40).map(lambda n: [IPOption_NOP()] * n),
    st.lists(ipv4s, min_size=1, max_size=9).map(lambda r: [IPOption_RR(routers=r)]),
)
tcp_options = st.lists(
    st.sampled_from(
        [("MSS", 1460), ("NOP", None), ("WScale", 14), ("SAckOK", b""), ("Timestamp", (7, 9))]
    ),
    max_size=4,
)


@settings(max_examples=250, deadline=None)
@given(
    old=st.tuples(ipv4s, ports, ipv4s, ports),
    new=st.tuples(ipv4s, ports, ipv4s, ports),
    flags=st.integers(0, 0xFF),
    payload=st.binary(max_size=1460),
    ip_opts=ip_options,
    tcp_opts=tcp_options,
    ident=st.integers(0, 0xFFFF),
    ttl=st.integers(0, 0xFF),
    tos=st.integers(0, 0xFF),
    df=st.booleans(),
    seq=st.integers(0, 2**32 - 1),
    window=st.integers(0, 0xFFFF),
)
def test_rewrite_property(
    old: tuple[str, int, str, int],
    new: tuple[str, int, str, int],
    flags: int,
    payload: bytes,
    ip_opts: list[Any],
    tcp_opts: list[Any],
    ident: int,
    ttl: int,
    tos: int,
    df: bool,
    seq: int,
    window: int,
) -> None:
    src, sport, dst, dport = old
    pkt = IP(
        src=src, dst=dst, id=ident, ttl=ttl, tos=tos, flags="DF" if df else 0, options=ip_opts
    ) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, window=window, options=tcp_opts)
    if payload:
        pkt = pkt / Raw(payload)
    buf = bytearray(bytes(pkt))
    before = bytes(buf)
    m = parse(buf)
    assert m.err == lib.PKS_OK
    assert m.payload == len(payload)
    assert raw(m.key) == key_bytes(src, sport, dst, dport)
    nsrc, nsport, ndst, ndport = new
    lib.pks_rewrite(cbuf(buf), m, make_nat(nsrc, nsport, ndst, ndport))
    assert_rewritten(before, bytes(buf), nsrc, nsport, ndst, ndport)
    # and the rewritten packet still parses, to exactly the new key
    m2 = parse(buf)
    assert m2.err == lib.PKS_OK
    assert raw(m2.key) == key_bytes(nsrc, nsport, ndst, ndport)


# ----------------------------------------------------------------------------- flow index


def test_table_new_bounds() -> None:
    assert lib.pks_table_new(0, 1) == ffi.NULL
    assert lib.pks_table_new((1 << 30) + 1, 1) == ffi.NULL
    for n in (1, 3, 64, 1000):
        t = new_table(n, 42)
        cap = t.mask + 1
        assert cap & (cap - 1) == 0 and cap >= 4 * n  # power of two, load factor <= 1/2
        assert (t.nslots, t.nkeys) == (n, 0)
        assert index_snapshot(t) == b"\xff" * (4 * cap)
        assert flows_snapshot(t) == bytes(n * ffi.sizeof("pks_flow"))


def _flow_keys(i: int) -> tuple[Any, Any, Any, Any]:
    k0 = make_key(CLIENT, 40000 + i, VIP, 80)
    k1 = make_key(BACKEND, 8080, LOCAL, 50000 + i)
    n0 = make_nat(LOCAL, 50000 + i, BACKEND, 8080)
    n1 = make_nat(VIP, 80, CLIENT, 40000 + i)
    return k0, n0, k1, n1


def test_insert_lookup_remove() -> None:
    t = new_table(16, 7)
    k0, n0, k1, n1 = _flow_keys(1)
    assert lib.pks_table_insert(t, 5, k0, k1) == 0
    assert t.nkeys == 2
    assert lib.pks_table_lookup(t, k0) == 5 << 1
    assert lib.pks_table_lookup(t, k1) == 5 << 1 | 1
    f = t.flows[5]
    assert (f.used, f.pkts[0], f.pkts[1], f.bytes[0], f.last_seen) == (1, 0, 0, 0, 0.0)
    assert raw(f.key[0]) == raw(k0) and raw(f.key[1]) == raw(k1)
    # each direction becomes the other's key reversed
    assert raw(flow_nat(t, 5, 0)) == raw(n0) and raw(flow_nat(t, 5, 1)) == raw(n1)
    assert lib.pks_table_lookup(t, make_key(CLIENT, 40001, VIP, 81)) == -1
    assert lib.pks_table_lookup(t, make_key(CLIENT, 40001, VIP, 80, proto=17)) == -1
    # keys compare as bytes: a nonzero pad is a different key
    odd = make_key(CLIENT, 40001, VIP, 80)
    odd.pad = 1
    assert lib.pks_table_lookup(t, odd) == -1

    assert lib.pks_table_remove(t, 5) == 0
    assert t.nkeys == 0
    assert lib.pks_table_lookup(t, k0) == -1
    assert lib.pks_table_lookup(t, k1) == -1
    # all gone but the slot's count of flows opened in it, and its link in the free list
    assert t.flows[5].gen == 1 and t.free_head == 5
    t.flows[5].gen = t.flows[5].next = 0
    assert raw(t.flows[5]) == bytes(ffi.sizeof("pks_flow"))
    assert index_snapshot(t) == b"\xff" * (4 * (t.mask + 1))
    assert lib.pks_table_remove(t, 5) == -1
    # the slot and the keys can be used again
    assert lib.pks_table_insert(t, 5, k0, k1) == 0
    assert lib.pks_table_lookup(t, k1) == 5 << 1 | 1


def test_each_backend_s_flows_are_counted_wherever_their_state_changes() -> None:
    t = new_table(16, 7)
    assert lib.pks_table_set_backends(t, 3) == 0
    assert lib.pks_table_set_backends(t, lib.PKS_NUMBER_MAX + 1) == -1

    def load(b: int) -> tuple[int, int]:
        return t.bk_load[b].active, t.bk_load[b].inactive

    k0, _n0, k1, _n1 = _flow_keys(1)
    assert lib.pks_table_insert(t, 5, k0, k1) == 0
    t.flows[5].backend = 2
    assert load(2) == (0, 0)  # not counted before its first state
    for state, want in [
        (State.SYN_RECV, (0, 1)),
        (State.SYN_RECV, (0, 1)),  # the same state again: no change
        (State.ESTABLISHED, (1, 0)),
        (State.FIN_WAIT, (0, 1)),
        (State.ESTABLISHED, (1, 0)),
    ]:
        assert lib.pks_flow_set_state(t, 5, state, 1.0) == 0
        assert load(2) == want
    assert lib.pks_table_remove(t, 5) == 0
    assert (load(0), load(1), load(2)) == ((0, 0), (0, 0), (0, 0))
    # a flow of a backend beyond the counted ones is not counted (and overruns nothing)
    counted = bytes(ffi.buffer(t.bk_load, t.bk_load_cap * ffi.sizeof("pks_load")))
    assert all(load(b) == (0, 0) and t.bk_load[b].rt == -1 for b in range(t.bk_load_cap))
    assert lib.pks_table_insert(t, 5, k0, k1) == 0
    t.flows[5].backend = t.bk_load_cap
    assert lib.pks_flow_set_state(t, 5, State.ESTABLISHED, 1.0) == 0
    assert lib.pks_table_remove(t, 5) == 0
    assert bytes(ffi.buffer(t.bk_load, t.bk_load_cap * ffi.sizeof("pks_load"))) == counted


def test_a_program_takes_only_counted_backends_and_its_own_state() -> None:
    t = new_table(16, 7)
    assert lib.pks_table_set_backends(t, 2) == 0
    members = ffi.new("pks_pick[]", 2)
    for i, m in enumerate(members):
        m.backend, m.addr, m.port, m.weight = i, 0xC0000201 + i, 8080, 1
    vip = 0xCB00710A
    run, null = lib.pks_service_run, ffi.NULL
    assert run(t, 7, vip, 80, lib.PKS_PROG_LC, members, 2, null, 0) == 0
    assert (t.nsvc, t.svc[0].prog, t.svc[0].nstate) == (1, lib.PKS_PROG_LC, 0)
    assert run(t, 7, vip, 80, lib.PKS_PROG_WLC, members, 2, null, 0) == 0
    assert (t.nsvc, t.svc[0].prog) == (1, lib.PKS_PROG_WLC)
    assert run(t, 7, vip, 80, lib.PKS_PROG_LC, members, 0, null, 0) == -1  # members needed
    assert run(t, 7, vip, 80, 99, members, 2, null, 0) == -1  # no such program
    wrr = ffi.new("int64_t[]", [5, -5])
    assert run(t, 7, vip, 80, lib.PKS_PROG_WRR, members, 2, wrr, 1) == -1  # one current each
    assert run(t, 7, vip, 80, lib.PKS_PROG_WRR, members, 2, wrr, 2) == 0
    out = ffi.new("int64_t[]", 4)
    assert lib.pks_service_state(t, 7, out, 4) == 2 and list(out[0:2]) == [5, -5]
    assert lib.pks_service_state(t, 7, out, 1) == -1  # more than fits
    rr = ffi.new("int64_t[]", [-1])
    assert run(t, 7, vip, 80, lib.PKS_PROG_RR, members, 2, rr, 1) == -1  # a turn below 0
    members[1].backend = t.bk_load_cap  # a number C does not count
    assert run(t, 8, vip, 81, lib.PKS_PROG_LC, members, 2, null, 0) == -1
    assert t.nsvc == 1 and t.svc[0].prog == lib.PKS_PROG_WRR  # a refused program changes nothing
    assert run(t, 8, vip, 81, lib.PKS_PROG_EMPTY, null, 0, null, 0) == 0
    assert lib.pks_service_forget(t, 7) == 0 and lib.pks_service_forget(t, 7) == -1
    assert (t.nsvc, t.svc[0].id, t.svc[0].prog) == (1, 8, lib.PKS_PROG_EMPTY)
    assert lib.pks_backend_rt(t, 0, 0.25) == 0 and t.bk_load[0].rt == 0.25
    assert lib.pks_backend_rt(t, 0, -0.5) == -1
    assert lib.pks_backend_rt(t, t.bk_load_cap, 1.0) == -1


def test_insert_errors_change_nothing() -> None:
    t = new_table(8, 3)
    k0, _n0, k1, _n1 = _flow_keys(1)
    assert lib.pks_table_insert(t, 2, k0, k1) == 0
    a0, _m0, a1, _m1 = _flow_keys(2)
    index, flows = index_snapshot(t), flows_snapshot(t)

    def unchanged() -> None:
        assert index_snapshot(t) == index
        assert flows_snapshot(t) == flows
        assert t.nkeys == 2

    assert lib.pks_table_insert(t, 3, k0, a1) == -1  # first key taken
    unchanged()
    assert lib.pks_table_insert(t, 3, a0, k1) == -1  # second key taken
    unchanged()
    assert lib.pks_table_insert(t, 3, k1, a0) == -1  # dir-1 key as a dir-0 key
    unchanged()
    assert lib.pks_table_insert(t, 3, a0, a0) == -1  # both keys equal
    unchanged()
    assert lib.pks_table_insert(t, 2, a0, a1) == -2  # slot in use
    unchanged()
    assert lib.pks_table_insert(t, 8, a0, a1) == -2  # slot out of range
    unchanged()
    assert lib.pks_table_insert(t, 0xFFFFFFFF, a0, a1) == -2
    unchanged()
    assert lib.pks_table_remove(t, 3) == -1  # not in use
    assert lib.pks_table_remove(t, 8) == -1  # out of range
    unchanged()
    assert lib.pks_table_lookup(t, a0) == -1 and lib.pks_table_lookup(t, a1) == -1


def test_table_full_and_emptied() -> None:
    n = 32
    t = new_table(n, 11)
    flows = [_flow_keys(i) for i in range(n)]
    for i, (k0, _n0, k1, _n1) in enumerate(flows):
        assert lib.pks_table_insert(t, i, k0, k1) == 0
    assert t.nkeys == 2 * n
    for i, (k0, _, k1, _) in enumerate(flows):
        assert lib.pks_table_lookup(t, k0) == i << 1
        assert lib.pks_table_lookup(t, k1) == i << 1 | 1
    for i in range(0, n, 2):
        assert lib.pks_table_remove(t, i) == 0
    for i, (k0, _, k1, _) in enumerate(flows):
        want = -1 if i % 2 == 0 else i << 1
        assert lib.pks_table_lookup(t, k0) == want
        assert lib.pks_table_lookup(t, k1) == (-1 if i % 2 == 0 else i << 1 | 1)
    for i in range(1, n, 2):
        assert lib.pks_table_remove(t, i) == 0
    assert t.nkeys == 0
    assert index_snapshot(t) == b"\xff" * (4 * (t.mask + 1))


class IndexModel:
    """Drives a pks_table and a dict model with the same operations and compares them."""

    def __init__(self, nslots: int, seed: int, npool: int) -> None:
        self.t = new_table(nslots, seed)
        self.nslots = nslots
        rng = random.Random(seed)
        # a small pool of keys so that duplicates and chains are frequent
        tuples = set()
        while len(tuples) < npool:
            tuples.add(
                (
                    str(ipaddress.IPv4Address(rng.getrandbits(32))),
                    rng.choice((80, 443, rng.getrandbits(16))),
                    rng.choice((VIP, LOCAL)),
                    rng.getrandbits(16),
                )
            )
        self.pool = [make_key(*k) for k in sorted(tuples)]
        self.slots: dict[int, tuple[int, int]] = {}  # slot -> (pool index k0, pool index k1)
        self.where: dict[int, int] = {}  # pool index -> slot << 1 | dir

    def insert(self, slot: int, i0: int, i1: int) -> None:
        t = self.t
        if slot >= self.nslots or slot in self.slots:
            want = -2
        elif i0 in self.where or i1 in self.where or i0 == i1:
            want = -1
        else:
            want = 0
        before = index_snapshot(t)
        got = lib.pks_table_insert(t, slot, self.pool[i0], self.pool[i1])
        assert got == want, (slot, i0, i1)
        if want == 0:
            self.slots[slot] = (i0, i1)
            self.where[i0], self.where[i1] = slot << 1, slot << 1 | 1
            assert t.flows[slot].used == 1
        else:
            assert index_snapshot(t) == before

    def remove(self, slot: int) -> None:
        want = 0 if slot in self.slots else -1
        assert lib.pks_table_remove(self.t, slot) == want
        if want == 0:
            i0, i1 = self.slots.pop(slot)
            del self.where[i0], self.where[i1]
            assert self.t.flows[slot].used == 0

    def check(self) -> None:
        t = self.t
        assert t.nkeys == len(self.where) == 2 * len(self.slots)
        entries = [e for e in ffi.unpack(t.index, t.mask + 1) if e != EMPTY]
        assert sorted(entries) == sorted(self.where.values())
        for i, k in enumerate(self.pool):
            assert lib.pks_table_lookup(t, k) == self.where.get(i, -1), i


@pytest.mark.parametrize(
    ("nslots", "seed"), [(64, 1), (64, 2), (64, 0xDEADBEEF), (64, 2**64 - 1), (5, 3), (1, 4)]
)
def test_index_randomized_model(nslots: int, seed: int) -> None:
    model = IndexModel(nslots, seed, npool=4 * nslots + 40)
    rng = random.Random(seed ^ 0x5A5A)
    npool = len(model.pool)
    for _ in range(1500):
        r = rng.random()
        free = [s for s in range(nslots) if s not in model.slots]
        if r < 0.6:
            # mostly a free slot and fresh keys; sometimes every kind of error
            slot = rng.choice(free) if free and rng.random() < 0.9 else rng.randrange(nslots + 2)
            i0, i1 = rng.randrange(npool), rng.randrange(npool)
            if rng.random() < 0.03:
                i1 = i0
            model.insert(slot, i0, i1)
        else:
            slot = (
                rng.choice(list(model.slots))
                if model.slots and r < 0.97
                else rng.randrange(nslots + 2)
            )
            model.remove(slot)
        model.check()
    # drain: everything removable, index empty again
    for slot in list(model.slots):
        model.remove(slot)
        model.check()
    assert index_snapshot(model.t) == b"\xff" * (4 * (model.t.mask + 1))


ops = st.lists(
    st.one_of(
        st.tuples(st.just("ins"), st.integers(0, 8), st.integers(0, 39), st.integers(0, 39)),
        st.tuples(st.just("del"), st.integers(0, 8), st.just(0), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), ops=ops)
def test_index_hypothesis_model(seed: int, ops: list[tuple[str, int, int, int]]) -> None:
    model = IndexModel(8, seed, npool=40)
    for op, slot, i0, i1 in ops:
        if op == "ins":
            model.insert(slot, i0, i1)
        else:
            model.remove(slot)
        model.check()


# ----------------------------------------------------------------------------- pks_process


class Switch:
    """One table with one flow: client -> VIP rewritten to LOCAL:snat -> BACKEND, and back."""

    SLOT = 3

    def __init__(self) -> None:
        self.t = new_table(8, 99)
        self.k0 = make_key(CLIENT, 40312, VIP, 80)
        self.n0 = make_nat(LOCAL, 61000, BACKEND, 8080)
        self.k1 = make_key(BACKEND, 8080, LOCAL, 61000)
        self.n1 = make_nat(VIP, 80, CLIENT, 40312)
        assert lib.pks_table_insert(self.t, self.SLOT, self.k0, self.k1) == 0
        self.m = ffi.new("pks_meta *")

    @property
    def flow(self) -> Any:
        return self.t.flows[self.SLOT]

    def process(self, buf: bytearray, now: float = 1.0) -> int:
        return lib.pks_process(self.t, cbuf(buf), len(buf), now, self.m, 0)


def client_pkt(flags: str = "A", payload: bytes = b"") -> bytearray:
    return tcp(CLIENT, VIP, 40312, 80, flags=flags, payload=payload)


def backend_pkt(flags: str = "A", payload: bytes = b"") -> bytearray:
    """The backend's side of client_pkt's connection: its data from 2000 on, acknowledging
    the client's up to 1000."""
    return tcp(BACKEND, LOCAL, 8080, 61000, flags=flags, payload=payload, seq=2000, ack=1000)


def test_process_unknown_key_is_slow_and_untouched() -> None:
    sw = Switch()
    buf = tcp(CLIENT, VIP, 40313, 80, flags="S")
    before = bytes(buf)
    assert sw.process(buf) == lib.PKS_V_SLOW
    assert sw.m.err == lib.PKS_OK and sw.m.slot == -1
    assert raw(sw.m.key) == key_bytes(CLIENT, 40313, VIP, 80)
    assert bytes(buf) == before
    f = sw.flow
    assert (f.pkts[0], f.pkts[1], f.bytes[0], f.bytes[1], f.last_seen) == (0, 0, 0, 0, 0.0)


def test_process_known_flow_counts_and_rewrites_without_a_grid() -> None:
    """Without a state grid C still forwards a known flow's data (no SYN, FIN or RST): counted,
    rewritten; those flags are left to Python (test_process_..._control_packets_go_slow)."""
    sw = Switch()
    a = client_pkt("A", b"hello")
    b = backend_pkt("PA", b"world!")
    assert sw.process(a, now=10.5) == lib.PKS_V_FAST
    assert (sw.m.err, sw.m.slot, sw.m.dir) == (lib.PKS_OK, Switch.SLOT, 0)
    assert sw.process(client_pkt("A", b"hello"), now=11.0) == lib.PKS_V_FAST
    assert sw.process(b, now=12.25) == lib.PKS_V_FAST
    assert (sw.m.slot, sw.m.dir) == (Switch.SLOT, 1)
    f = sw.flow
    assert (f.pkts[0], f.pkts[1]) == (2, 1)
    assert (f.bytes[0], f.bytes[1]) == (2 * 45, 46)
    assert f.last_seen == 12.25


def test_process_counts_ip_length_not_trailing_bytes() -> None:
    sw = Switch()
    buf = bytearray(bytes(client_pkt("A", b"xy")) + bytes(30))
    assert sw.process(buf) == lib.PKS_V_FAST
    assert sw.flow.bytes[0] == 42


@pytest.mark.parametrize("flags", ["A", "PA", "", "U", "E", "C"])
def test_process_fast_flow_rewrites(flags: str) -> None:
    sw = Switch()
    a = client_pkt(flags, b"GET / HTTP/1.1\r\n\r\n")
    a0 = bytes(a)
    assert sw.process(a, now=5.0) == lib.PKS_V_FAST
    assert (sw.m.slot, sw.m.dir) == (Switch.SLOT, 0)
    assert_rewritten(a0, bytes(a), LOCAL, 61000, BACKEND, 8080)

    b = backend_pkt(flags, b"HTTP/1.1 200 OK\r\n\r\n!")
    b0 = bytes(b)
    assert sw.process(b, now=6.0) == lib.PKS_V_FAST
    assert (sw.m.slot, sw.m.dir) == (Switch.SLOT, 1)
    assert_rewritten(b0, bytes(b), VIP, 80, CLIENT, 40312)
    f = sw.flow
    assert (f.pkts[0], f.pkts[1], f.bytes[0], f.bytes[1]) == (1, 1, len(a0), len(b0))
    assert f.last_seen == 6.0


@pytest.mark.parametrize("flags", ["S", "SA", "F", "FA", "R", "RA", "FPA", "SRFA"])
def test_process_fast_flow_control_packets_go_slow(flags: str) -> None:
    sw = Switch()
    for buf, want_dir in ((client_pkt(flags), 0), (backend_pkt(flags, b"z"), 1)):
        before = bytes(buf)
        assert sw.process(buf, now=3.0) == lib.PKS_V_SLOW
        assert (sw.m.err, sw.m.slot, sw.m.dir) == (lib.PKS_OK, Switch.SLOT, want_dir)
        assert bytes(buf) == before
    assert (sw.flow.pkts[0], sw.flow.pkts[1]) == (1, 1)


@pytest.mark.parametrize(
    ("data", "expected"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_process_malformed_drops(data: bytes, expected: str) -> None:
    sw = Switch()
    sw.m.slot, sw.m.dir = 7, 1  # stale values from an earlier packet
    buf = bytearray(data)
    assert sw.process(buf) == lib.PKS_V_DROP
    assert err_name(sw.m.err) == expected
    assert sw.m.slot == -1
    assert bytes(buf) == data


def test_process_malformed_packet_of_known_flow_not_counted() -> None:
    sw = Switch()
    buf = client_pkt("A", b"data")
    buf[11] ^= 0xFF  # break the IP checksum
    before = bytes(buf)
    assert sw.process(buf, now=9.0) == lib.PKS_V_DROP
    assert err_name(sw.m.err) == "ip_checksum"
    assert bytes(buf) == before
    f = sw.flow
    assert (f.pkts[0], f.pkts[1], f.bytes[0], f.last_seen) == (0, 0, 0, 0.0)


def test_apply_uses_nat_of_slot_and_dir() -> None:
    sw = Switch()
    syn = client_pkt("S")
    syn0 = bytes(syn)
    assert sw.process(syn) == lib.PKS_V_SLOW
    assert bytes(syn) == syn0
    lib.pks_apply(sw.t, cbuf(syn), sw.m)
    assert_rewritten(syn0, bytes(syn), LOCAL, 61000, BACKEND, 8080)

    synack = backend_pkt("SA")
    synack0 = bytes(synack)
    assert sw.process(synack) == lib.PKS_V_SLOW
    lib.pks_apply(sw.t, cbuf(synack), sw.m)
    assert_rewritten(synack0, bytes(synack), VIP, 80, CLIENT, 40312)


def test_process_after_remove_is_unknown() -> None:
    sw = Switch()
    assert lib.pks_table_remove(sw.t, Switch.SLOT) == 0
    buf = client_pkt("A")
    before = bytes(buf)
    assert sw.process(buf) == lib.PKS_V_SLOW
    assert sw.m.slot == -1
    assert bytes(buf) == before


# ------------------------------------------------------------- the state grid in C


def grid_bytes() -> bytes:
    return bytes(TRANSITIONS[d][e][s] for d in (INPUT, OUTPUT) for e in Event for s in State)


def graded_switch() -> Switch:
    sw = Switch()
    assert lib.pks_table_set_transitions(sw.t, grid_bytes(), len(grid_bytes())) == 0
    return sw


def take_events(sw: Switch) -> list[tuple[int, int, int, int, int, float, float]]:
    out = ffi.new("pks_event[]", 8)
    n = lib.pks_events_take(sw.t, out, 8)
    return [(e.slot, e.kind, getattr(e, "from"), e.to, e.dir, e.t, e.value) for e in out[0:n]]


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize(("direction", "flags"), [(0, "A"), (0, "FA"), (1, "A"), (1, "FA")])
def test_c_moves_a_fast_flow_exactly_as_the_python_grid(
    state: State, direction: int, flags: str
) -> None:
    sw = graded_switch()
    sw.flow.state = state
    buf = client_pkt(flags) if direction == 0 else backend_pkt(flags)
    assert sw.process(buf, now=7.5) == lib.PKS_V_FAST
    want = next_state(state, direction, int(TCP(flags=flags).flags))
    assert sw.flow.state == want
    assert take_events(sw) == []  # a state move is C's alone (it counts the backend's flows)


def test_c_times_the_first_response_after_the_first_request_once() -> None:
    sw = graded_switch()
    sw.flow.state = State.ESTABLISHED
    assert sw.process(backend_pkt("PA", b"banner"), now=1.0) == lib.PKS_V_FAST  # no request yet
    assert sw.process(client_pkt("PA", b"GET /"), now=2.0) == lib.PKS_V_FAST
    assert sw.process(client_pkt("PA", b"more"), now=2.5) == lib.PKS_V_FAST  # still the first
    assert sw.process(backend_pkt("A"), now=2.75) == lib.PKS_V_FAST  # no data: not the answer
    assert take_events(sw) == []
    assert sw.process(backend_pkt("PA", b"200 OK"), now=3.25) == lib.PKS_V_FAST
    assert sw.process(backend_pkt("PA", b"200 OK"), now=4.0) == lib.PKS_V_FAST
    evs = take_events(sw)
    assert evs == [(Switch.SLOT, lib.PKS_EV_RESPONSE, 1, 1, 1, 3.25, 1.25)]


# (a client's bare SYN in TIME_WAIT or CLOSE is a new connection on the port: native_open's)
@pytest.mark.parametrize(
    ("state", "flags"),
    [
        (state, flags)
        for state in State
        for flags in ("S", "SA", "R", "RA", "RFA")
        if not (flags == "S" and state in (State.TIME_WAIT, State.CLOSE))
    ],
)
def test_c_moves_a_flow_on_a_client_s_syn_or_rst_as_the_python_grid(
    state: State, flags: str
) -> None:
    sw = graded_switch()
    sw.flow.state = state
    sw.flow.syns = 1
    buf = client_pkt(flags)
    assert sw.process(buf) == lib.PKS_V_FAST
    want = next_state(state, INPUT, int(TCP(flags=flags).flags))  # RST > SYN > FIN > ACK
    assert sw.flow.state == want
    assert sw.flow.syns == (2 if "S" in flags else 1)  # the client's SYNs, counted
    assert take_events(sw) == []


def test_a_backend_s_rst_before_its_syn_ack_is_told_as_a_refusal() -> None:
    sw = graded_switch()
    sw.flow.state = State.SYN_RECV
    assert sw.process(backend_pkt("RA"), now=2.0) == lib.PKS_V_FAST
    assert sw.flow.state == next_state(State.SYN_RECV, OUTPUT, int(TCP(flags="RA").flags))
    assert take_events(sw) == [
        (Switch.SLOT, lib.PKS_EV_REFUSED, State.SYN_RECV, State.SYN_RECV, 1, 2.0, 0.0),
    ]
    sw.flow.state, sw.flow.synack_at = State.ESTABLISHED, 1.5  # it had answered
    assert sw.process(backend_pkt("RA"), now=3.0) == lib.PKS_V_FAST
    assert take_events(sw) == []  # no refusal


def test_a_full_event_ring_sends_packets_to_python() -> None:
    sw = graded_switch()
    for i in range(lib.PKS_EVENTS - 2):  # a packet may need 3 events: it stops at 2 free
        sw.flow.state = State.SYN_RECV
        assert sw.process(backend_pkt("RA"), now=float(i)) == lib.PKS_V_FAST  # a refusal each
    assert sw.t.ev_count == lib.PKS_EVENTS - 2
    sw.flow.state = State.SYN_RECV
    buf = client_pkt("A")
    before = bytes(buf)
    assert sw.process(buf) == lib.PKS_V_SLOW  # no room to tell: Python decides
    assert bytes(buf) == before and sw.flow.state == State.SYN_RECV
    out = ffi.new("pks_event[]", lib.PKS_EVENTS)
    assert lib.pks_events_take(sw.t, out, lib.PKS_EVENTS) == lib.PKS_EVENTS - 2
    assert [out[i].t for i in (0, lib.PKS_EVENTS - 3)] == [0.0, float(lib.PKS_EVENTS - 3)]
    assert sw.process(buf) == lib.PKS_V_FAST


def test_a_bad_grid_is_refused() -> None:
    t = new_table(4, 1)
    grid = bytearray(grid_bytes())
    assert lib.pks_table_set_transitions(t, bytes(grid[:-1]), len(grid) - 1) == -1
    grid[5] = lib.PKS_STATES
    assert lib.pks_table_set_transitions(t, bytes(grid), len(grid)) == -1
    assert t.has_trans == 0


def test_c_reports_the_backends_first_syn_ack_and_forwards_it() -> None:
    sw = graded_switch()
    sw.flow.state = State.SYN_RECV
    sw.flow.syns, sw.flow.created = 2, 4.0
    assert sw.process(backend_pkt("SA"), now=4.5) == lib.PKS_V_FAST
    # from SYN_RECV, 2 SYNs from the client, the backend's side, at 4.5, 0.5 s after the SYN
    assert take_events(sw) == [(Switch.SLOT, lib.PKS_EV_SYNACK, 3, 2, 1, 4.5, 0.5)]
    assert sw.flow.synack_at == 4.5
    assert sw.process(backend_pkt("SA"), now=5.5) == lib.PKS_V_FAST  # a retransmission
    assert take_events(sw) == []
    assert sw.process(client_pkt("SA"), now=6.0) == lib.PKS_V_FAST  # not from the backend
    assert sw.process(backend_pkt("SAR"), now=6.0) == lib.PKS_V_FAST  # an RST: not a SYN-ACK
    kinds = [e[1] for e in take_events(sw)]  # state moves only: no SYN-ACK, no refusal
    assert lib.PKS_EV_SYNACK not in kinds and lib.PKS_EV_REFUSED not in kinds
