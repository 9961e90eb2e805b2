"""SYN cookies (native/cookie.c): the switch answers a SYN itself, opens the flow on the
client's valid ACK, makes the backend's handshake, and moves the backend's sequence numbers
into the client's view for the rest of the flow. scapy is the oracle for every header and
checksum."""

from __future__ import annotations

import base64

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.packet import Raw
from scapy_oracle import checksums_ok
from test_icmp import icmp_checksums_ok
from test_switch import CLIENT, SNAT, VIP, push

from pktswitch.control.streams import event
from pktswitch.core.switch import ServiceState, Switch
from pktswitch.core.tcpstate import DEFAULT_TIMEOUTS
from pktswitch.core.trace import HEADERS_SNAP as MIN_SNAP
from pktswitch.core.trace import Subscription
from pktswitch.sched.pool import BackendState
from pktswitch.sched.registry import make

T0 = 1000.0
ISN, BACKEND_ISN = 7000, 5_000_000


class Cookies:
    """A switch over one backend (A), its packets out as scapy reads them."""

    def __init__(self, mode: str = "on", **kw: object) -> None:
        svc = ServiceState("web", VIP, 80, make("rr"), [BackendState("A", "192.0.2.1", 8080)])
        self.sw = Switch([svc], snat=[SNAT], seed=1, snat_start=0, timeouts=dict(DEFAULT_TIMEOUTS),
                         syn_cookies=mode, **kw)  # type: ignore[arg-type]  # fmt: skip
        self.now = T0

    def send(self, pkt: IP) -> IP | None:
        out = push(self.sw, pkt, self.now)
        assert out is None or (icmp_checksums_ok(out) if ICMP in out else checksums_ok(out))
        return out

    def client(self, flags: str, sport: int = 40000, **kw: object) -> IP | None:
        payload = kw.pop("payload", b"")
        p = IP(src=CLIENT, dst=VIP) / TCP(sport=sport, dport=80, flags=flags, **kw)
        return self.send(p / Raw(payload) if payload else p)

    def snat_port(self, sport: int = 40000) -> int:
        """The SNAT port of the client port's flow."""
        (row,) = [r for r in self.sw.flows(self.now) if r["client"] == f"{CLIENT}:{sport}"]
        return int(str(row["snat"]).rsplit(":")[1])

    def backend(self, flags: str, sport: int = 40000, **kw: object) -> IP | None:
        """From A to the SNAT pair of the client port's flow."""
        snat_port = self.snat_port(sport)
        payload = kw.pop("payload", b"")
        p = IP(src="192.0.2.1", dst=SNAT) / TCP(sport=8080, dport=snat_port, flags=flags, **kw)
        return self.send(p / Raw(payload) if payload else p)

    def cookie(self, sport: int = 40000, mss: int = 1460) -> int:
        """The client's SYN, answered by the switch: the cookie."""
        out = self.client("S", sport, seq=ISN, options=[("MSS", mss)])
        assert out is not None
        return int(out[TCP].seq)

    def acked(self, sport: int = 40000, mss: int = 1460) -> int:
        """SYN, cookie, the client's ACK (the backend's SYN leaves): the cookie."""
        cookie = self.cookie(sport, mss)
        assert self.client("A", sport, seq=ISN + 1, ack=cookie + 1, window=64240) is not None
        return cookie

    def open(self, sport: int = 40000) -> int:
        """SYN, cookie, the client's ACK, the backend's SYN-ACK: the cookie."""
        cookie = self.acked(sport)
        assert self.backend("SA", sport, seq=BACKEND_ISN, ack=ISN + 1, window=29200) is not None
        return cookie


def test_the_syn_is_answered_by_the_switch_and_opens_nothing() -> None:
    c = Cookies()
    out = c.client("S", seq=ISN, window=64240, options=[("MSS", 1460), ("WScale", 7)])
    assert out is not None
    t = out[TCP]
    assert (out.src, out.dst, t.sport, t.dport) == (VIP, CLIENT, 80, 40000)
    assert (t.flags, t.ack, t.window, t.options) == ("SA", ISN + 1, 0, [("MSS", 1460)])
    assert (out.len, out.ttl, out.flags) == (44, 64, "DF")
    s = c.sw.stats(c.now)
    assert (s["flows"], s["flows_created"], s["half_open"]) == (0, 0, 0)
    assert s["syn_cookies"] == {"mode": "on", "active": True, "sent": 1, "opened": 0}


def test_the_clients_ack_opens_the_flow_with_the_backends_syn() -> None:
    c = Cookies()
    cookie = c.cookie(mss=1400)
    syn = c.client("A", seq=ISN + 1, ack=cookie + 1, window=64240)
    assert syn is not None
    t = syn[TCP]
    assert (syn.src, syn.dst, t.dport) == (SNAT, "192.0.2.1", 8080)
    assert (t.flags, t.seq, t.ack, t.window, t.options) == ("S", ISN, 0, 64240, [("MSS", 1400)])
    (row,) = c.sw.flows(c.now)
    assert row["state"] == "SYN_RECV"
    assert c.sw.stats(c.now)["syn_cookies"]["opened"] == 1


def test_the_backends_syn_ack_becomes_the_clients_window() -> None:
    c = Cookies()
    cookie = c.acked()
    out = c.backend("SA", seq=BACKEND_ISN, ack=ISN + 1, window=29200, options=[("MSS", 1460)])
    assert out is not None
    t = out[TCP]
    assert (out.src, out.dst, t.sport, t.dport) == (VIP, CLIENT, 80, 40000)
    assert (t.flags, t.seq, t.ack, t.window, t.options) == ("A", cookie + 1, ISN + 1, 29200, [])


def test_the_rest_of_the_flow_is_translated_both_ways() -> None:
    c = Cookies()
    cookie = c.open()
    req = c.client("PA", seq=ISN + 1, ack=cookie + 1, payload=b"GET / HTTP/1.1\r\n\r\n")
    assert req is not None
    assert (req[TCP].seq, req[TCP].ack, bytes(req[TCP].payload)) == (
        ISN + 1, BACKEND_ISN + 1, b"GET / HTTP/1.1\r\n\r\n",
    )  # fmt: skip
    assert c.sw.flows(c.now)[0]["state"] == "ESTABLISHED"
    resp = c.backend("PA", seq=BACKEND_ISN + 1, ack=ISN + 19, payload=b"hello")
    assert resp is not None
    assert (resp.dst, resp[TCP].seq, resp[TCP].ack, bytes(resp[TCP].payload)) == (
        CLIENT, cookie + 1, ISN + 19, b"hello",
    )  # fmt: skip
    # and the windows are tracked in the client's view: a blind RST from the backend's side
    # is out of it, and leaves as it came (dropped, the translation undone)
    assert c.backend("R", seq=BACKEND_ISN + 900_000) is None
    assert c.sw.last_drop == "rst_out_of_window"
    fin = c.client("FA", seq=ISN + 19, ack=cookie + 6)
    assert fin is not None and fin[TCP].ack == BACKEND_ISN + 6


def test_a_resent_syn_ack_gets_the_ack_from_the_switch() -> None:
    """A backend whose client has nothing to send resends its SYN-ACK: the switch ACKs it."""
    c = Cookies()
    c.open()
    again = c.backend("SA", seq=BACKEND_ISN, ack=ISN + 1, window=29200)
    assert again is not None
    t = again[TCP]
    assert (again.src, again.dst, t.dport) == (SNAT, "192.0.2.1", 8080)
    assert (t.flags, t.seq, t.ack) == ("A", ISN + 1, BACKEND_ISN + 1)


@pytest.mark.parametrize("flags", ["RA", "SAR"])
def test_a_backend_refusing_resets_the_client_where_it_expects(flags: str) -> None:
    """An RST before the backend's SYN-ACK (with SYN-ACK on it too: not taken for one)"""
    c = Cookies()
    cookie = c.acked()
    rst = c.backend(flags, seq=0, ack=ISN + 1)
    assert rst is not None
    assert (rst.dst, rst[TCP].flags, rst[TCP].seq) == (CLIENT, flags, cookie + 1)


@pytest.mark.parametrize(
    ("flags", "ack"), [("SA", ISN), ("SA", ISN + 2), ("RA", ISN + 1000), ("R", 0), ("S", 0)]
)
def test_before_the_backend_answers_only_what_acknowledges_its_syn_is_taken(
    flags: str, ack: int
) -> None:
    """A SYN-ACK or RST that does not acknowledge the backend's SYN (ISN + 1) is forged:
    dropped, and the real SYN-ACK after it still opens the flow."""
    c = Cookies()
    cookie = c.acked()
    assert c.backend(flags, seq=BACKEND_ISN + 7, ack=ack) is None
    assert c.sw.last_drop == "tcp_out_of_window"
    out = c.backend("SA", seq=BACKEND_ISN, ack=ISN + 1, window=29200)
    assert out is not None
    assert (out[TCP].flags, out[TCP].seq, out[TCP].ack) == ("A", cookie + 1, ISN + 1)


def test_before_the_backend_answers_the_client_sends_nothing() -> None:
    c = Cookies()
    cookie = c.acked()
    assert c.client("PA", seq=ISN + 1, ack=cookie + 1, payload=b"early") is None
    assert c.sw.last_drop == "tcp_out_of_window"


def test_a_probe_before_the_backend_answers_sends_its_syn_again() -> None:
    """The backend's SYN lost: the client's zero-window probe (or its ACK again) resends it."""
    c = Cookies()
    cookie = c.acked(mss=1400)
    again = c.client("A", seq=ISN, ack=cookie + 1, window=64240)
    assert again is not None
    t = again[TCP]
    assert (again.dst, t.dport, t.flags, t.seq, t.options) == (
        "192.0.2.1", 8080, "S", ISN, [("MSS", 1400)],
    )  # fmt: skip
    assert len(c.sw.table) == 1


def test_a_forged_cookie_opens_nothing() -> None:
    c = Cookies()
    cookie = c.cookie()
    for bad in (cookie ^ 1, cookie + 0x10000, cookie ^ 0x80000000):
        assert c.client("A", seq=ISN + 1, ack=bad + 1) is None
    assert c.client("A", seq=ISN + 5, ack=cookie + 1) is None  # another ISN
    assert c.client("A", sport=40001, seq=ISN + 1, ack=cookie + 1) is None  # another port
    s = c.sw.stats(c.now)
    assert (s["dropped"], s["flows"]) == ({"bad_cookie": 5}, 0)


def test_a_cookie_is_good_for_two_minutes_at_most() -> None:
    c = Cookies()
    cookie = c.cookie()
    c.now += 130
    assert c.client("A", seq=ISN + 1, ack=cookie + 1) is None
    assert c.sw.last_drop == "no_flow"  # no cookie out for 128 s: a stray ACK
    c.now = T0
    cookie = c.cookie(sport=40001)
    c.now += 127  # within its own period or the next: the time's count says
    opened = c.client("A", sport=40001, seq=ISN + 1, ack=cookie + 1)
    assert (opened is not None) == (int((T0 + 127) // 64) - int(T0 // 64) <= 1)


def test_without_cookies_an_ack_of_no_flow_is_a_stray() -> None:
    c = Cookies(mode="off")
    syn = c.client("S", seq=ISN)
    assert syn is not None and syn.dst == "192.0.2.1"  # opened as ever
    assert c.client("A", sport=40001, seq=1, ack=1) is None
    assert c.sw.last_drop == "no_flow"


def test_auto_answers_with_cookies_from_half_the_half_open_share() -> None:
    c = Cookies(mode="auto", max_half_open=4)
    outs = [c.client("S", sport=p, seq=ISN) for p in (1, 2, 3)]
    assert [o.dst if o else None for o in outs] == ["192.0.2.1", "192.0.2.1", CLIENT]
    s = c.sw.stats(c.now)
    assert (s["half_open"], s["syn_cookies"]["sent"], s["syn_cookies"]["active"]) == (2, 1, True)


def test_a_syn_without_mss_gets_the_least() -> None:
    c = Cookies()
    out = c.client("S", seq=ISN)
    assert out is not None and out[TCP].options == [("MSS", 536)]
    syn = c.client("A", seq=ISN + 1, ack=out[TCP].seq + 1)
    assert syn is not None and syn[TCP].options == [("MSS", 536)]


def icmp_error(src: str, dst: str, quoted: IP) -> IP:
    return IP(src=src, dst=dst) / ICMP(type=3, code=4, nexthopmtu=1280) / Raw(bytes(quoted))


def test_an_error_from_the_backends_side_quotes_the_clients_own_packet() -> None:
    """A router toward the backend: "fragmentation needed" about the request the switch sent
    (its ack in the backend's numbers); the client gets its own request quoted, byte for byte
    (the kernel matches the quote to its socket)."""
    c = Cookies()
    cookie = c.open()
    tcp = TCP(sport=40000, dport=80, flags="PA", seq=ISN + 1, ack=cookie + 1)
    mine = IP(src=CLIENT, dst=VIP) / tcp / Raw(b"GET / HTTP/1.1\r\n\r\n")
    sent = c.send(mine)
    assert sent is not None and sent[TCP].ack == BACKEND_ISN + 1
    back = c.send(icmp_error("192.0.2.254", SNAT, sent))
    assert back is not None and (back.src, back.dst) == (VIP, CLIENT)
    assert bytes(back)[28:] == bytes(mine)
    assert icmp_checksums_ok(back)


def test_an_error_from_the_clients_side_quotes_the_backends_own_packet() -> None:
    c = Cookies()
    cookie = c.open()
    assert c.client("PA", seq=ISN + 1, ack=cookie + 1, payload=b"GET") is not None
    theirs = IP(src="192.0.2.1", dst=SNAT) / TCP(
        sport=8080, dport=c.snat_port(), flags="PA", seq=BACKEND_ISN + 1, ack=ISN + 4
    ) / Raw(b"x" * 1400)  # fmt: skip
    sent = c.send(theirs)
    assert sent is not None and sent[TCP].seq == cookie + 1
    back = c.send(icmp_error("198.51.100.254", VIP, sent))
    assert back is not None and (back.src, back.dst) == (SNAT, "192.0.2.1")
    assert bytes(back)[28:] == bytes(theirs)
    assert icmp_checksums_ok(back)
    assert c.sw.stats(c.now)["icmp_errors_translated"] == {"to_backend": 1, "to_client": 0}


def test_an_error_about_the_switchs_own_syn_ack_reaches_no_backend() -> None:
    """Before the backend answered, the only packet toward the client was the switch's
    cookie: the backend knows nothing of it."""
    c = Cookies()
    cookie = c.acked()
    own = IP(src=VIP, dst=CLIENT) / TCP(sport=80, dport=40000, flags="SA", seq=cookie,
                                        ack=ISN + 1, window=0)  # fmt: skip
    assert c.send(icmp_error("198.51.100.254", VIP, IP(bytes(own)))) is None
    assert c.sw.dropped == {"icmp_out_of_window": 1}


def test_a_trace_shows_the_packets_the_switch_answers_with_whole() -> None:
    """The client's SYN leaves as the cookie's SYN-ACK (44 bytes from 44), its ACK as the
    backend's SYN (44 bytes from 40): each after-copy is the packet that left, whole."""
    c = Cookies()
    sub = Subscription()
    c.sw.subscribe(sub)
    cookie = c.acked(mss=1400)
    c.sw.take_trace()
    syn_ack, syn = list(sub.queue)
    assert (syn_ack.length, syn_ack.out_length, syn.length, syn.out_length) == (44, 44, 40, 44)
    assert syn.after is not None and syn_ack.after is not None
    assert IP(syn_ack.after)[TCP].seq == cookie and IP(syn_ack.after)[TCP].flags == "SA"
    left = IP(syn.after)
    assert checksums_ok(left) and len(syn.after) == 44
    assert (left[TCP].flags, left[TCP].options) == ("S", [("MSS", 1400)])
    ev = event(syn, 1, MIN_SNAP, 0.0)
    assert (ev["before"]["len"], ev["after"]["len"]) == (40, 44)
    assert base64.b64decode(ev["raw_after"]) == syn.after
    c.sw.unsubscribe(sub)
