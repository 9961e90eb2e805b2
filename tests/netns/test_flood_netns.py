"""A SYN flood from 100,000 spoofed sources (bounded in count and time) while keep-alive
connections run through the switch: the table stays under its limits, memory stays flat and
the established connections lose nothing. Without SYN cookies half-open flows make room for
each other (eviction); with them (the default, auto) the flood is answered by the switch from
half the half-open share on and opens nothing more."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from netns_helpers import LAB_DIR, NETNS, Lab, kaload_result, start_kaload, wait_until
from switchlab import Switch, config_text

pytestmark = NETNS

SPOOFED = "203.0.113.128/25"  # sources of the flood; the lb namespace blackholes the SYN-ACKs
FLOOD = 100_000
RATE = 25_000  # SYNs per second asked of the generator
MAX_FLOWS, MAX_HALF_OPEN = 20_000, 2_000
# The flood leaves the backends holding half-open connections from tens of thousands of SNAT
# ports for about a minute (SYN-ACK retries); an SNAT address of its own (one for each run)
# keeps later connections from landing on one of those 4-tuples.
FLOOD_SNAT = {"off": "203.0.113.2", "auto": "203.0.113.4"}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.parametrize("cookies", ["off", "auto"])
def test_syn_flood_leaves_established_connections_working(lab: Lab, cookies: str) -> None:
    keys = {"max_flows": MAX_FLOWS, "max_half_open": MAX_HALF_OPEN, "syn_cookies": cookies}
    lab.exec("lb", "ip", "route", "add", "blackhole", SPOOFED)
    try:
        config = config_text(lab, snat=FLOOD_SNAT[cookies], switch_keys=keys)
        with Switch(lab, config) as sw:
            assert sw.proc is not None
            pid = sw.proc.pid
            # a request may wait out TCP retransmissions (the flood overflows the TUN queue,
            # which drops established packets too); a connection must not end
            load = start_kaload(lab, conns=4, seconds=14, interval=0.01, timeout=20)
            wait_until("4 established flows", lambda: sw.stats()["flows"] == 4)
            rss_before = rss_kib(pid)
            flood = lab.spawn(
                "cli",
                sys.executable,
                str(LAB_DIR / "synflood.py"),
                lab.VIP,
                "80",
                SPOOFED,
                str(FLOOD),
                str(RATE),
                "2",  # seconds of calm first: the load's baseline
                "20",  # the generator's own bound
            )
            samples = []  # (flows, half-open, RSS) every 0.2 s until the generator is done
            deadline = time.monotonic() + 30
            while flood.poll() is None and time.monotonic() < deadline:
                s = sw.stats()
                samples.append((s["flows"], s["half_open"], rss_kib(pid)))
                time.sleep(0.2)
            assert flood.wait(5) == 0
            log = lab.log_path(flood)
            assert log is not None
            sent = json.loads(log.read_text().strip().splitlines()[-1])
            result = kaload_result(lab, load)
            s = sw.stats()
            print(
                f"\nflood ({cookies}): {sent}; switch: {s['flows_created']} flows created, "
                f"{s['flows_evicted']} evicted, cookies {s['syn_cookies']}, dropped "
                f"{s['dropped']}; peak flows "
                f"{max(f for f, _, _ in samples)}, half-open peak {s['half_open_peak']}; RSS "
                f"{rss_before} -> max {max(r for _, _, r in samples)} KiB; keep-alive "
                f"requests per second {result['per_second']}"
            )
            assert sent["sent"] == FLOOD
            assert result["lost"] == [], result["lost"]
            assert min(result["per_second"]) > 0, result["per_second"]
            # half-open flows plus the four held ones (and a closing one or two)
            assert max(f for f, _, _ in samples) <= MAX_HALF_OPEN + 4 + 8
            if cookies == "off":
                assert s["half_open_peak"] == MAX_HALF_OPEN  # the flood reached the limit...
                assert s["flows_evicted"] > 0  # ...and turned over the half-open share
                assert s["syn_cookies"]["sent"] == 0
            else:  # half the share taken, then the SYNs answered with cookies, none opened
                assert s["half_open_peak"] == MAX_HALF_OPEN // 2
                assert s["flows_evicted"] == 0
                # (a backend refusing one of the first lets one more in: a few dozen at most)
                assert s["flows_created"] <= MAX_HALF_OPEN // 2 + 100
                got = s["syn_cookies"]
                assert got["sent"] >= 0.9 * FLOOD, got  # (a full TUN queue may drop some)
                assert got["opened"] == 0  # spoofed sources never ACK
            assert max(r for _, _, r in samples) - rss_before < 8 * 1024  # KiB
            assert sw.stop() == 0
    finally:
        lab.exec("lb", "ip", "route", "del", "blackhole", SPOOFED, check=False)
