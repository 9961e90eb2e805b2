"""A 60 s soak of mixed load through the switch: keep-alive connections, a stream of short
connections and an iperf3 bulk transfer at once. No established connection may be lost, no
request may fail, and once the load stops the table must drain to empty on its timeouts, with
every flow accounted for and every SNAT port and backend count back at zero."""

from __future__ import annotations

import json
import sys

from netns_helpers import LAB_DIR, NETNS, Lab, kaload_result, start_kaload, wait_until
from switchlab import BULK_PORT, Switch, config_text

pytestmark = NETNS

SOAK = 60  # seconds of load
# ~3000 short connections leave the backends in TIME_WAIT toward their SNAT ports for 60 s
# (their own kernel's, not the switch's); an SNAT address of its own keeps the next test's
# connections off those 4-tuples (one landing on one may be answered as the old connection,
# be reset by the client and come back as a new SYN, scheduled anew)
SOAK_SNAT = "203.0.113.3"
# short timeouts for closing states, so that the table drains within seconds of the load's
# end (ESTABLISHED keeps its 900 s: iperf3's control connection is idle for the whole test)
TIMEOUTS = {
    "syn_recv": 5,
    "fin_wait": 3,
    "close_wait": 3,
    "last_ack": 3,
    "time_wait": 3,
    "close": 3,
}


def test_sixty_seconds_of_mixed_load_lose_nothing_and_leak_no_flow(lab: Lab) -> None:
    with Switch(lab, config_text(lab, timeouts=TIMEOUTS, snat=SOAK_SNAT)) as sw:
        keepalive = start_kaload(lab, conns=4, seconds=SOAK, interval=0.01)
        short = lab.spawn(
            "cli", sys.executable, str(LAB_DIR / "reqstream.py"), lab.VIP, "80", "0.02", str(SOAK)
        )
        bulk = lab.spawn(
            "cli",
            "iperf3", "-c", lab.VIP, "-p", str(BULK_PORT), "-t", str(SOAK - 5), "-b", "200M",
            "-J",
        )  # fmt: skip
        result = kaload_result(lab, keepalive, timeout=SOAK + 30)
        assert short.wait(30) == 0 and bulk.wait(30) == 0
        short_log, bulk_log = lab.log_path(short), lab.log_path(bulk)
        assert short_log is not None and bulk_log is not None
        lines = short_log.read_text().splitlines()
        failed = [line for line in lines if " fail " in line]
        answered = [line for line in lines if " ok " in line]
        iperf = json.loads(bulk_log.read_text())["end"]
        print(
            f"\nsoak {SOAK} s: keep-alive {result['requests']} requests on 4 connections, "
            f"short connections {len(answered)} ok / {len(failed)} failed, iperf3 "
            f"{iperf['sum_received']['bits_per_second'] / 1e6:.0f} Mbit/s; "
            f"switch {sw.stats()['flows_created']} flows created"
        )
        assert result["lost"] == [], result["lost"]
        assert min(result["per_second"]) > 0, result["per_second"]
        assert failed == [] and len(answered) > SOAK * 10
        assert iperf["sum_received"]["bytes"] > 0.9 * (SOAK - 5) * 200e6 / 8

        # the load is over: every flow must leave on its own timeout
        wait_until("an empty table", lambda: sw.stats()["flows"] == 0, timeout=30, step=0.2)
        s = sw.stats()
        ended = sum(s["flows_expired"].values()) + s["flows_evicted"] + s["flows_reset"]
        assert s["flows_created"] == ended, s
        assert s["half_open"] == 0 and set(s["snat_in_use"].values()) == {0}
        for b in sw.stats_backends():
            assert (b["active"], b["inactive"]) == (0, 0), b
        assert s["packets_in"] == s["packets_forwarded"] + sum(s["dropped"].values())
        assert sw.stop() == 0
        assert sw.leftovers() == []
