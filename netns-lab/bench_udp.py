"""The benchmark's UDP load: iperf3 -u through the bulk port's UDP service (backend A), small
datagrams at rising packet rates until a step loses one; the datagrams per second received at
the highest rate that lost none. Each step is a short iperf3 run of its own, so the whole
search takes about as long as one load of the benchmark. (With 1200-byte datagrams iperf3
itself lost some at 400 Mbit/s, 42 kpps, through the kernel's NAT and pktswitch alike: a
packet rate wants small datagrams.)"""

from __future__ import annotations

import json

from labnet import Lab
from switchlab import BULK_PORT

RATES_KPPS = (10, 20, 40, 60, 80, 120, 160, 240)  # the step that loses ends the search
DATAGRAM = 64  # bytes of payload (iperf3's least is 16: its sequence numbers)
STEP_MIN = 2  # seconds a step runs at least


def udp_search(lab: Lab, duration: int) -> dict[str, float]:
    """{"kpps": thousands of datagrams per second received at the highest rate with 0 lost,
    "steps": how many ran}; kpps 0 when even the first step lost one. A step iperf3 fails
    ends the search."""
    step = max(STEP_MIN, duration // len(RATES_KPPS))
    best = {"kpps": 0.0, "steps": 0.0}
    for rate in RATES_KPPS:
        r = lab.exec(
            "cli",
            "iperf3", "-u", "-c", lab.VIP, "-p", str(BULK_PORT), "-t", str(step),
            "-b", str(rate * 1000 * DATAGRAM * 8), "-l", str(DATAGRAM), "-J",
            timeout=step + 30, check=False,
        )  # fmt: skip
        best["steps"] += 1
        end = json.loads(r.stdout or "{}").get("end", {}).get("sum")
        if not end or end.get("lost_packets", 1) != 0:
            break
        best["kpps"] = end["packets"] / end["seconds"] / 1e3
    return best
