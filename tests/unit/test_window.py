"""TCP window tracking (native/window.c): what a blind sender with a client's or a backend's
address and ports can no longer do to a flow. Every packet is built by scapy; each drop is
held to its reason, and to the flow left exactly as it was (state, counters, idle timer)."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.packet import Raw
from test_switch import Harness

from pktswitch.core.tcpstate import State

C_ISN, B_ISN = 1000, 5000  # the client's and the backend's first sequence numbers


def established(h: Harness, sport: int = 40000, **syn_options: object) -> IP:
    """A handshake and one request and answer: the client has sent C_ISN+1..C_ISN+5, the
    backend B_ISN+1..B_ISN+3, each way has acknowledged all of it; windows 8192 (scapy's)."""
    opts = syn_options.get("options", [])
    syn = h.client("S", sport, seq=C_ISN, options=opts)
    assert syn is not None
    assert h.backend(syn, "SA", seq=B_ISN, ack=C_ISN + 1, options=opts) is not None
    assert h.client("A", sport, seq=C_ISN + 1, ack=B_ISN + 1) is not None
    assert h.client("PA", sport, seq=C_ISN + 1, ack=B_ISN + 1, payload=b"GET /") is not None
    assert h.backend(syn, "PA", seq=B_ISN + 1, ack=C_ISN + 6, payload=b"ok!") is not None
    assert h.client("A", sport, seq=C_ISN + 6, ack=B_ISN + 4) is not None
    assert h.flow(sport)["state"] == "ESTABLISHED"
    return syn


def unchanged(h: Harness, before: dict[str, object], sport: int = 40000) -> None:
    after = h.flow(sport)
    assert after == before, (before, after)


def test_blind_rsts_fins_and_data_from_the_client_side_change_nothing() -> None:
    h = Harness()
    established(h)
    h.now += 5  # (the idle timer: a drop must not refresh it)
    before = h.flow()
    for flags, seq, ack, reason in (
        ("R", C_ISN + 6 + 200_000, 0, "rst_out_of_window"),
        ("RA", (C_ISN - 100_000) % 2**32, B_ISN + 4, "rst_out_of_window"),
        ("FA", C_ISN + 6 + 200_000, B_ISN + 4, "fin_out_of_window"),
        ("PA", C_ISN + 6 + 200_000, B_ISN + 4, "tcp_out_of_window"),
        ("A", C_ISN + 6, B_ISN + 100_000, "tcp_out_of_window"),  # acks what was never sent
    ):
        assert h.client(flags, seq=seq, ack=ack, payload=b"x" if "P" in flags else b"") is None
        assert h.sw.last_drop == reason, (flags, h.sw.last_drop)
        unchanged(h, before)
    assert h.sw.dropped == {
        "rst_out_of_window": 2,
        "fin_out_of_window": 1,
        "tcp_out_of_window": 2,
    }


def test_a_blind_rst_from_the_backend_side_changes_nothing() -> None:
    h = Harness()
    syn = established(h)
    before = h.flow()
    assert h.backend(syn, "R", seq=B_ISN + 4 + 300_000) is None
    assert h.sw.last_drop == "rst_out_of_window"
    unchanged(h, before)


def test_an_rst_in_the_window_but_not_exact_passes_and_moves_nothing() -> None:
    """The endpoint answers it with a challenge ACK (RFC 5961 3.2); the flow stays."""
    h = Harness()
    established(h)
    out = h.client("R", seq=C_ISN + 6 + 100)
    assert out is not None and out[TCP].flags == "R" and out[TCP].seq == C_ISN + 6 + 100
    assert h.flow()["state"] == "ESTABLISHED"
    assert h.sw.stats(h.now)["tcp_rst_in_window"] == 1


def test_an_exact_rst_closes_the_flow_from_either_side() -> None:
    """The receiver's next expected number, as its last ACK says (client side); or all the
    sender has sent (backend side)."""
    h = Harness()
    established(h, 40000)
    assert h.client("R", 40000, seq=C_ISN + 6) is not None
    assert h.flow(40000)["state"] == "CLOSE"
    syn = established(h, 40001)
    assert h.backend(syn, "R", seq=B_ISN + 4) is not None
    assert h.flow(40001)["state"] == "CLOSE"
    assert h.sw.dropped == {}


def test_an_rst_then_a_syn_does_not_move_the_client_to_another_backend() -> None:
    """The attack of a blind sender who knows the client's address and port: before windows
    were tracked, an RST moved the flow to CLOSE and the SYN after it opened a new flow on
    the next backend."""
    h = Harness()
    syn = established(h)
    assert h.client("R", seq=C_ISN + 6 + 3_000_000) is None
    again = h.client("S", seq=C_ISN + 2**30)  # (far ahead: it must not count)
    assert again is not None and again.dst == syn.dst  # the same backend, the same flow
    assert h.flow()["state"] == "ESTABLISHED"
    assert h.sw.stats(h.now)["flows_created"] == 1
    # the SYN moved none of the flow's sequence numbers: the client's next request passes
    assert h.client("PA", seq=C_ISN + 6, ack=B_ISN + 4, payload=b"GET /") is not None
    assert h.sw.dropped == {"rst_out_of_window": 1}


def test_window_scale_widens_the_window_both_ways_agreed_on() -> None:
    """Both SYNs carry window scale 4: the backend's 8192 means 131072 bytes, so data 100,000
    bytes ahead is in the window; without the option in both SYNs it is not."""
    ahead = C_ISN + 6 + 100_000
    scaled = Harness()
    established(scaled, options=[("WScale", 4)])
    assert scaled.client("PA", seq=ahead, ack=B_ISN + 4, payload=b"x") is not None
    assert scaled.client("PA", seq=C_ISN + 6 + 140_000, ack=B_ISN + 4, payload=b"x") is None
    assert scaled.sw.last_drop == "tcp_out_of_window"
    plain = Harness()
    syn = plain.client("S", seq=C_ISN, options=[("WScale", 4)])  # the backend's has none
    assert syn is not None
    plain.backend(syn, "SA", seq=B_ISN, ack=C_ISN + 1)
    plain.client("A", seq=C_ISN + 1, ack=B_ISN + 1)
    plain.backend(syn, "A", seq=B_ISN + 1, ack=C_ISN + 1)
    assert plain.client("PA", seq=C_ISN + 1 + 100_000, ack=B_ISN + 1, payload=b"x") is None
    assert plain.sw.last_drop == "tcp_out_of_window"


def test_retransmissions_and_the_closing_handshake_pass() -> None:
    """What a real connection sends stays in the window: a retransmitted request, the FINs
    both ways, their ACKs."""
    h = Harness()
    syn = established(h)
    p = IP(src="198.51.100.2", dst="203.0.113.10") / TCP(
        sport=40000, dport=80, flags="PA", seq=C_ISN + 1, ack=B_ISN + 4
    )
    assert h.send(p / Raw(b"GET /")) is not None  # the request again
    assert h.client("FA", seq=C_ISN + 6, ack=B_ISN + 4) is not None
    assert h.backend(syn, "FA", seq=B_ISN + 4, ack=C_ISN + 7) is not None
    assert h.client("A", seq=C_ISN + 7, ack=B_ISN + 5) is not None
    assert h.flow()["state"] == State.TIME_WAIT.name
    assert h.sw.dropped == {}
