"""Attacks from outside on real packets: a sender who knows a client's address and port, but
none of its sequence numbers, injects RSTs, FINs, data and SYNs at its connection while it is
in use (netns-lab/blindinject.py, from the client's namespace). The connection must not
notice: it keeps its backend and answers every request after the injection."""

from __future__ import annotations

import json
import sys

from netns_helpers import LAB_DIR, NETNS, HeldClient, Lab
from switchlab import Switch, config_text

pytestmark = NETNS

RSTS, FINS, DATA, SYNS = ("R", "RA"), ("FA",), ("PA",), ("S",)
EACH = 100


def test_blind_rsts_fins_data_and_syns_break_no_connection(lab: Lab) -> None:
    with Switch(lab, config_text(lab)) as sw, HeldClient(lab) as held:
        first = held.ask()
        assert first.startswith("answer "), first
        kinds = [*RSTS, *FINS, *DATA, *SYNS]
        out = lab.exec(
            "cli", sys.executable, str(LAB_DIR / "blindinject.py"),
            lab.VIP, "80", held.ip, held.port, str(EACH), *kinds,
        )  # fmt: skip
        assert json.loads(out.stdout) == {"sent": EACH * len(kinds)}
        after = [held.ask() for _ in range(3)]
        assert after == [first] * 3, (after, sw.stats())  # the same backend, no reset
        (flow,) = [f for f in sw.flows() if f["client"] == f"{held.ip}:{held.port}"]
        assert flow["state"] == "ESTABLISHED"
        s = sw.stats()
        dropped = s["dropped"]
        # each blind RST is out of the window, or (by a chance of about 1 in 60,000) in it
        # but not exact: passed on, the flow not moved
        rsts = dropped.get("rst_out_of_window", 0) + s["tcp_rst_in_window"]
        assert rsts == EACH * len(RSTS), s
        assert dropped.get("fin_out_of_window", 0) >= EACH * len(FINS) - 1, s
        assert dropped.get("tcp_out_of_window", 0) >= EACH * len(DATA) - 1, s
