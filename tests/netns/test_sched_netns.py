"""Scheduling on real connections: each algorithm does what it claims, counted at the client."""

from __future__ import annotations

import collections
import re
import sys

import pytest
from netns_helpers import LAB_DIR, NETNS, Lab, hold_connections, wait_until
from switchlab import Switch, config_text, service_text

from pktswitch.sched.base import ACTIVE_WEIGHT

pytestmark = NETNS

URL = "http://203.0.113.10/"


def answers(lab: Lab, n: int, source: str | None = None, url: str = URL) -> list[str]:
    return [lab.curl(url, source=source).strip() for _ in range(n)]


def test_wrr_2_3_5_gives_20_30_50_of_100(lab: Lab) -> None:
    cfg = config_text(lab, scheduler="wrr", weights={"A": 2, "B": 3, "C": 5})
    with Switch(lab, cfg) as sw:
        got = answers(lab, 100)
        assert collections.Counter(got) == {"A": 20, "B": 30, "C": 50}
        assert got[:10] == list("CBACBCCABC")  # interleaved, not in bursts
        reasons = {r["reason"] for r in sw.flows(backend="C")}
        assert "wrr: C current 5 of total 10" in reasons


def test_iphash_keeps_a_client_on_one_backend_and_spreads_clients(lab: Lab) -> None:
    with Switch(lab, config_text(lab, scheduler="iphash")) as sw:
        per_client = {ip: set(answers(lab, 4, source=ip)) for ip in lab.EXTRA_CLIENT_IPS}
        assert all(len(b) == 1 for b in per_client.values()), per_client
        spread = collections.Counter(next(iter(b)) for b in per_client.values())
        assert set(spread) == {"A", "B", "C"}, spread
        # and `pktswitch which` predicts each client's backend without sending a packet
        for ip, backends in per_client.items():
            which = sw.cli("which", "--service", "web", ip, "--json")
            assert f'"backend": "{next(iter(backends))}"' in which.stdout


def test_mega_proxy_and_the_ip_port_mitigation(lab: Lab) -> None:
    """Many clients behind one address (a proxy) all land on one backend with iphash on the
    address; hashing address and port spreads them again."""
    with Switch(lab, config_text(lab, scheduler="iphash")):
        assert len(set(answers(lab, 30))) == 1
    with Switch(lab, config_text(lab, scheduler="iphash", options={"hash_key": "ip+port"})):
        spread = collections.Counter(answers(lab, 30))
        assert set(spread) == {"A", "B", "C"}, spread


def test_lc_prefers_the_backend_with_fewer_held_connections(lab: Lab) -> None:
    with Switch(lab, config_text(lab, scheduler="lc")) as sw:
        holder, lines = hold_connections(lab, 2)  # to A, then B (ties go to the first listed)
        assert [line.split(" -> ")[1] for line in lines] == ["A", "B"]
        assert answers(lab, 6) == ["C"] * 6  # C holds no ESTABLISHED flow, A and B one each
        # each of C's earlier flows, closed, weighs 1/256 of an established one
        reasons = sorted(r["reason"] for r in sw.flows(backend="C"))
        assert reasons == [f"lc: C 0+{k} < A 1+0, +1 more" for k in range(6)]  # A: runner-up
        lab.stop(holder)


@pytest.mark.parametrize("scheduler", ["lc", "wlc"])
def test_a_burst_of_connections_spreads_over_the_backends(lab: Lab, scheduler: str) -> None:
    """Twelve connections opened at once: when most SYNs arrive, no flow is established yet.
    Flows in their handshake weigh 1/ACTIVE_WEIGHT of an established one (IPVS), so the
    burst spreads; counting established flows only sent all twelve to A, the first listed.

    Which handshakes are done when a SYN arrives is timing (one done early outweighs 255 in
    their handshake, and can leave A one flow and B and C the rest), so every pick is checked
    against the rule instead of against a split. Each flow's reason shows the chosen
    backend's and the runner-up's established+other flows at its pick; `flows` lists them
    oldest first, the order C opened them in, and none has ended yet, so the two counts of
    a pick are the flows opened before it on those backends, and the chosen one's
    established * ACTIVE_WEIGHT + other is the least (weights are all 1; ties to the first
    listed)."""
    pattern = re.compile(
        rf"{scheduler}: ([ABC]) (\d+)\+(\d+)(?: per 1=[\d.]+)? (<=?) "
        r"([ABC]) (\d+)\+(\d+)(?: per 1=[\d.]+)?, \+1 more( \(tie: first listed\))?"
    )
    with Switch(lab, config_text(lab, scheduler=scheduler)) as sw:
        holder, lines = hold_connections(lab, 12, burst=True)
        flows = [(r["reason"], r["backend"]) for r in sw.flows(service="web")]
        active = {
            r["backend"]: r["active"] for r in sw.cli_json("backends") if r["service"] == "web"
        }
        lab.stop(holder)
    assert len(flows) == 12
    assert [backend for _, backend in flows][:3] == ["A", "B", "C"], flows
    for k, (reason, backend) in enumerate(flows):
        before = [b for _, b in flows[:k]]
        m = pattern.fullmatch(reason)
        assert m is not None, reason
        chosen, est, other, op, runner, r_est, r_other, tie = m.groups()
        assert chosen == backend, reason
        assert int(est) + int(other) == before.count(chosen), (reason, before)
        assert int(r_est) + int(r_other) == before.count(runner), (reason, before)
        mine = int(est) * ACTIVE_WEIGHT + int(other)
        theirs = int(r_est) * ACTIVE_WEIGHT + int(r_other)
        listed_first = "ABC".index(chosen) < "ABC".index(runner)
        assert mine < theirs or (mine == theirs and listed_first), reason
        assert (op == "<=") == bool(tie) == (mine == theirs), reason
        # the third backend weighs no less than the runner-up (at most all its flows
        # established), or it would have been named
        (third,) = {"A", "B", "C"} - {chosen, runner}
        assert before.count(third) * ACTIVE_WEIGHT >= theirs, (reason, before)
    got = collections.Counter(backend for _, backend in flows)
    assert active == got, (active, got)
    assert collections.Counter(line.split(" -> ")[1] for line in lines) == got  # the client's


def test_lrt_sends_a_slower_backend_clearly_less(lab: Lab) -> None:
    """Backends answer on :8080 after 0, 0 and 50 ms (C is slow); lrt learns it from the
    first responses it forwards (or its probes) and sends C at most the flow that measured
    it. (Which of A and B takes the others is up to their estimates: one request at a time,
    the one measured faster takes each until its flows outweigh the difference.)"""
    servers = [
        lab.spawn(role, sys.executable, str(LAB_DIR / "slowhttp.py"), "8080", name, delay)
        for role, name, delay in (("a", "A", "0"), ("b", "B", "0"), ("c", "C", "0.05"))
    ]
    try:
        for ip in lab.BACKENDS.values():
            lab.wait_tcp("cli", ip, 8080)
        timed = service_text(lab, "timed", 8080, "lrt", {"A": 1, "B": 1, "C": 1})
        with Switch(lab, config_text(lab, extra=[timed])) as sw:
            got = collections.Counter(answers(lab, 60, url="http://203.0.113.10:8080/"))
            assert got["C"] <= 1 and got["A"] + got["B"] + got["C"] == 60, got
            rows = {r["backend"]: r for r in sw.cli_json("backends") if r["service"] == "timed"}
            for fast in ("A", "B"):  # measured by the flows each took, or else by probes
                assert rows[fast]["rt_ms"] is not None and rows[fast]["rt_ms"] < 40, rows
                if got[fast]:
                    assert rows[fast]["rt_data_ms"] < 40, rows
            if got["C"]:  # each flow C took taught lrt that C is slow
                assert rows["C"]["rt_data_ms"] > 40, rows
            wait_until("an active probe", lambda: sw.stats()["probes"]["sent"] > 0, timeout=5)
    finally:
        for p in servers:
            lab.stop(p)
