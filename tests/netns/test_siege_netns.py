"""Every attack from outside at once, on real packets, while real clients use the switch: a
keep-alive HTTP load, an iperf3 transfer and new connections one after another. Meanwhile, from
the client's side: blind RSTs, FINs, data and SYNs at one client's 4-tuple; SYNs with a bad
checksum from spoofed sources (a backend drops them unanswered: forged passive-health
signals); a greedy client opening as many connections as it can; and a flood of 100,000
spoofed SYNs at the highest rate the lab sends (SYN cookies on, auto, and a per-client limit
of 8 flows). Nothing a client holds
or opens may fail, no backend may be ejected, and the table and memory stay bounded."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from netns_helpers import LAB_DIR, NETNS, HeldClient, Lab, kaload_result, start_kaload, wait_until
from switchlab import BULK_PORT, Switch, config_text
from test_flood_netns import rss_kib

pytestmark = NETNS

SPOOFED = "203.0.113.128/25"  # the lb namespace blackholes answers to these
FLOOD, RATE = 100_000, 25_000
BADSUMS = 2_000
MAX_FLOWS, MAX_HALF_OPEN, PER_CLIENT = 20_000, 2_000, 8
GREEDY_TRIES = 40
KINDS = ("R", "RA", "FA", "PA", "S")
EACH = 50
SECONDS = 18  # of keep-alive load; the attacks start after BASELINE of them
BASELINE = 3


def log_json(lab: Lab, proc: subprocess.Popen[bytes]) -> Any:
    log = lab.log_path(proc)
    assert log is not None
    return json.loads(log.read_text().strip().splitlines()[-1])


def flood(lab: Lab, count: int, rate: int, *extra: str) -> subprocess.Popen[bytes]:
    script = str(LAB_DIR / "synflood.py")
    return lab.spawn(
        "cli", sys.executable, script, lab.VIP, "80", SPOOFED, str(count), str(rate), "0", "20",
        *extra,
    )  # fmt: skip


def test_every_attack_at_once_breaks_nothing_a_client_holds_or_opens(lab: Lab) -> None:
    keys = {"max_flows": MAX_FLOWS, "max_half_open": MAX_HALF_OPEN, "syn_cookies": "auto"}
    lab.exec("lb", "ip", "route", "add", "blackhole", SPOOFED)
    try:
        config = config_text(
            lab, snat="203.0.113.5", switch_keys=keys, per_client={"max_flows": PER_CLIENT}
        )
        with Switch(lab, config) as sw, HeldClient(lab) as held:
            assert sw.proc is not None
            pid = sw.proc.pid
            first = held.ask()
            assert first.startswith("answer "), first
            load = start_kaload(lab, conns=4, seconds=SECONDS, interval=0.01, timeout=20)
            iperf = lab.spawn(
                "cli", "iperf3", "-c", lab.VIP, "-p", str(BULK_PORT), "-t", str(SECONDS - 2),
                "-b", "20M", "-J",
            )  # fmt: skip
            wait_until("the load's flows", lambda: sw.stats()["flows"] >= 7, 10)
            rss_before = rss_kib(pid)
            time.sleep(BASELINE)  # the load's rate before the attacks: its first seconds
            attacks = [
                lab.spawn(
                    "cli",
                    sys.executable,
                    str(LAB_DIR / "blindinject.py"),
                    lab.VIP,
                    "80",
                    held.ip,
                    held.port,
                    str(EACH),
                    *KINDS,
                ),
                flood(lab, BADSUMS, 1_000, "badsum"),
            ]
            wait_until("the bad SYNs sent", lambda: attacks[1].poll() is not None, 20)
            greedy = lab.spawn(
                "cli", sys.executable, str(LAB_DIR / "greedy.py"),
                lab.VIP, "80", lab.EXTRA_CLIENT_IPS[0], str(GREEDY_TRIES), str(SECONDS),
            )  # fmt: skip
            big = flood(lab, FLOOD, RATE)
            opened: list[tuple[int, str]] = []  # new connections while the flood runs
            samples: list[tuple[int, int]] = []  # (flows, RSS)
            deadline = time.monotonic() + 30
            while big.poll() is None and time.monotonic() < deadline:
                r = lab.exec(
                    "cli", "curl", "-sS", "-m", "5", "--interface", lab.CLIENT_IP,
                    f"http://{lab.VIP}/", check=False, timeout=10,
                )  # fmt: skip
                opened.append((r.returncode, (r.stdout + r.stderr).strip()))
                s = sw.stats()
                samples.append((s["flows"], rss_kib(pid)))
            assert big.wait(5) == 0 and all(a.wait(10) == 0 for a in attacks)
            sent = log_json(lab, big)
            after = [held.ask() for _ in range(3)]
            result = kaload_result(lab, load, timeout=40)
            assert iperf.wait(40) == 0
            bulk = log_json_whole(lab, iperf)
            s = sw.stats()
            backends = {b["backend"]: b for b in sw.stats_backends() if b["service"] == "web"}
            lab.stop(greedy)

            # the flood's seconds of the keep-alive load against its first seconds
            per_second = result["per_second"]
            begin = int(sent["start"] - result["start"])
            during = per_second[begin : begin + max(1, int(sent["seconds"]))]
            before = sum(per_second[:BASELINE]) / BASELINE
            print(
                f"\nsiege: flood {sent}; keep-alive per second {per_second} (before "
                f"{before:.0f}, during {during}); new connections {len(opened)}; iperf3 "
                f"{bulk['end']['sum_received']['bits_per_second'] / 1e6:.1f} Mbit/s; cookies "
                f"{s['syn_cookies']}; dropped {s['dropped']}; peak flows "
                f"{max(f for f, _ in samples)}; RSS {rss_before} -> "
                f"{max(r for _, r in samples)} KiB"
            )
            # blind injections: the connection keeps its backend and sees no reset
            assert after == [first] * 3, after
            dropped = s["dropped"]
            rsts = dropped.get("rst_out_of_window", 0) + s["tcp_rst_in_window"]
            assert rsts == 2 * EACH, s
            # bad-checksum SYNs reach no backend, so they eject none (nor does the flood)
            assert dropped["tcp_checksum"] == BADSUMS, dropped
            assert s["passive_signals"]["confirmed"] == 0, s["passive_signals"]
            assert {n: b["health"] for n, b in backends.items()} == dict.fromkeys("ABC", "up")
            # the flood: refused or answered with cookies, table and memory bounded
            assert sent["sent"] == FLOOD
            # (its 126 sources reach their per-client limit first: each SYN beyond it is
            # dropped, the rest answered with cookies once half the half-open share is taken)
            cookies = s["syn_cookies"]
            assert cookies["active"] and cookies["sent"] > 0, cookies
            refused = dropped["client_max_flows"]
            assert cookies["sent"] + refused >= 0.9 * FLOOD, (cookies, refused)
            assert s["flows_evicted"] == 0
            # (half the half-open share, the held flows, the new ones in TIME_WAIT)
            bound = MAX_HALF_OPEN // 2 + PER_CLIENT + 7 + len(opened) + 8
            assert max(f for f, _ in samples) <= bound
            assert max(r for _, r in samples) - rss_before < 8 * 1024  # KiB
            # established traffic: no connection lost, its rate during the flood >= 90 %
            assert result["lost"] == [], result["lost"]
            assert sum(during) / len(during) >= 0.9 * before, (before, during)
            assert "error" not in bulk, bulk["error"]
            # new connections, also a greedy client's neighbours: every one answered
            assert opened and [c for c, _ in opened] == [0] * len(opened), opened
            assert log_json(lab, greedy) == {
                "established": PER_CLIENT,
                "refused": GREEDY_TRIES - PER_CLIENT,
            }
            assert sw.stop() == 0
    finally:
        lab.exec("lb", "ip", "route", "del", "blackhole", SPOOFED, check=False)


def log_json_whole(lab: Lab, proc: subprocess.Popen[bytes]) -> Any:
    """A process's whole log as one JSON document (iperf3 -J)."""
    log = lab.log_path(proc)
    assert log is not None
    return json.loads(log.read_text())
