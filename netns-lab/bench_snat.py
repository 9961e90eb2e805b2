"""What a short SNAT pool costs, on real packets in the netns lab: short connections through a
pool of --ports ports a backend, far fewer than the connections made in a backend's TIME_WAIT
(60 s) or the switch's (120 s). Run as root:

    .venv/bin/python netns-lab/bench_snat.py                          # 3 rounds
    .venv/bin/python netns-lab/bench_snat.py --baseline /tmp/wt-old   # beside another tree

Per tree and round, a fresh switch (full NAT, one SNAT address, snat_ports of --ports ports)
and wrk -t1 -c32 -H 'Connection: close' for --duration s (the backends close first, so they
hold each connection in TIME_WAIT): connections/s, wrk's errors (connect and timeouts), p99
latency, and what the switch counted: SYNs refused for want of a pair (snat_exhausted),
finished flows whose pair a new one took (flows_reclaimed), pairs reused within a backend's
TIME_WAIT (snat_early_reuse). Each round uses another SNAT address: the backends hold the
last round's TIME_WAITs toward the one before. Each run's steal (/proc/stat) is printed. It
prints figures; it is not a timed test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import ensure_tools, wrk
from labnet import Lab
from steal import cpu_ticks, steal_pct
from switchlab import PKTSWITCH, Switch, config_text

FIRST_PORT = 40000
FIGURES = ("rps", "errors", "p99_ms", "snat_exhausted", "reclaimed", "snat_early_reuse", "steal")


def run(lab: Lab, tree: str, args: argparse.Namespace, n: int) -> dict[str, float]:
    exe = str(Path(tree) / ".venv/bin/pktswitch") if tree != "current" else PKTSWITCH
    ports = (FIRST_PORT, FIRST_PORT + args.ports - 1)
    config = config_text(lab, snat=f"203.0.113.{2 + n % 8}", snat_ports=ports, hash_secret=None)
    with Switch(lab, config, exe=exe) as sw:
        before = cpu_ticks(Path("/proc/stat").read_text())
        res = wrk(lab, args.duration, close=True)
        res["steal"] = steal_pct(before, cpu_ticks(Path("/proc/stat").read_text()))
        s = sw.stats()
    res["snat_exhausted"] = s["snat_exhausted"]
    res["reclaimed"] = sum(s.get("flows_reclaimed", {}).values())
    res["snat_early_reuse"] = s["snat_early_reuse"]
    res.setdefault("p99_ms", 0.0)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--ports", type=int, default=500, help="SNAT ports (pairs a backend)")
    ap.add_argument("--baseline", help="another tree (its .venv/bin/pktswitch) beside this one")
    args = ap.parse_args()
    if not 10 <= args.ports <= 20000:
        ap.error("--ports: 10..20000")
    ensure_tools()
    trees = ["current", *([args.baseline] if args.baseline else [])]
    rows: dict[str, list[dict[str, float]]] = {t: [] for t in trees}
    with Lab(checksum_oracle=False) as lab:
        for rnd in range(1, args.rounds + 1):
            for tree in trees:
                r = run(lab, tree, args, sum(len(v) for v in rows.values()))
                rows[tree].append(r)
                cells = " ".join(f"{k}={r[k]:.1f}" for k in FIGURES)
                print(f"round {rnd} {tree} {cells}", flush=True)
    print(f"\nmedians over {args.rounds} round(s): {args.ports} SNAT ports a backend, "
          f"wrk -t1 -c32 Connection: close, {args.duration} s")  # fmt: skip
    print("tree | " + " | ".join(FIGURES))
    for tree in trees:
        cells = [f"{statistics.median(r[k] for r in rows[tree]):.1f}" for k in FIGURES]
        print(f"{tree} | " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
