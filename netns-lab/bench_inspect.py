"""What inspecting a big flow table costs the datapath, on real packets in the netns lab. Run
as root:

    .venv/bin/python netns-lab/bench_inspect.py                      # 3 rounds, 200k flows
    .venv/bin/python netns-lab/bench_inspect.py --baseline /tmp/wt-old  # beside another tree

The switch (nat mode, so that no SNAT pool bounds the table) is filled with --flows half-open
flows by a spoofed SYN flood (netns-lab/synflood.py; the lb namespace blackholes the
SYN-ACKs), then wrk runs keep-alive HTTP (-t1 -c32) for --duration s four times: alone,
while `pktswitch stats --json` runs back to back (the control: what the CLI's own processes
cost a two-core machine, the switch answering in microseconds), while `pktswitch flows
--json` does, and while `pktswitch backends --json` does; each both flat out (wrk, nginx and
the switch fill both CPUs: every other process takes CPU from them) and paced (--pace-ms
between each connection's answer and its next request: the CPUs have room, and the latency
shows what holds packets back). Per tree: wrk's requests/s and p99 latency in each run, the
p99 ratios to the run alone under the same load, how many listings completed and how long
one took. Each run's steal (/proc/stat) is
printed; a run with steal above 5 % says so. The backends resend no SYN-ACK (their
tcp_synack_retries is 0: waves of 200k resent SYN-ACKs through the switch would drown the
figures), and the runs' order turns round by round. It prints figures; it is not a timed test.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import ensure_tools, wrk
from labnet import Lab
from steal import cpu_ticks, steal_pct
from switchlab import PKTSWITCH, Switch, config_text

LAB_DIR = Path(__file__).parent
SPOOFED = "203.0.113.128/25"  # the flood's sources
MAX_FLOWS = 262144
RATE = 40_000  # SYNs per second asked of the generator
SETTLE = 5.0  # seconds after the flood before the first run (the backends' SYN queues drain)
RUNS = (("alone", None), ("stats", "stats"), ("flows", "flows"), ("backends", "backends"))
LOADS = ("flat out", "paced")


def listing_loop(exe: str, sock: str, cmd: str, stop: threading.Event) -> list[float]:
    """`pktswitch CMD --json` back to back until stop; the seconds each one took."""
    took = []
    while not stop.is_set():
        t0 = time.monotonic()
        subprocess.run([exe, cmd, "--json", "-s", sock], check=True, stdout=subprocess.DEVNULL)
        took.append(time.monotonic() - t0)
    return took


def measure(
    lab: Lab, exe: str, sock: str, cmd: str | None, duration: int, pace_ms: int
) -> dict[str, float]:
    before = cpu_ticks(Path("/proc/stat").read_text())
    stop, took = threading.Event(), []
    thread = None
    if cmd is not None:
        thread = threading.Thread(target=lambda: took.extend(listing_loop(exe, sock, cmd, stop)))
        thread.start()
    try:
        res = wrk(lab, duration, close=False, pace_ms=pace_ms)
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=120)
    res["steal_pct"] = steal_pct(before, cpu_ticks(Path("/proc/stat").read_text()))
    res["listings"] = len(took)
    res["listing_s"] = statistics.median(took) if took else 0.0
    return res


def run_tree(
    lab: Lab, tree: str, args: argparse.Namespace, rnd: int
) -> dict[str, dict[str, float]]:
    """One round of one tree; the runs' order turns with the round."""
    exe = str(Path(tree) / ".venv/bin/pktswitch") if tree != "current" else PKTSWITCH
    keys = {"max_flows": MAX_FLOWS, "max_half_open": MAX_FLOWS}
    config = config_text(lab, mode="nat", timeouts={"syn_recv": 900}, switch_keys=keys,
                         hash_secret=None)  # fmt: skip
    with Switch(lab, config, exe=exe) as sw:
        flood = lab.spawn("cli", sys.executable, str(LAB_DIR / "synflood.py"), lab.VIP, "80",
                          SPOOFED, str(args.flows), str(RATE), "0", "60")  # fmt: skip
        flood.wait(timeout=90)
        deadline = time.monotonic() + 30
        while sw.stats()["flows"] < 0.95 * args.flows and time.monotonic() < deadline:
            time.sleep(0.5)
        flows = sw.stats()["flows"]
        time.sleep(SETTLE)
        out = {}
        for load in LOADS:
            pace = args.pace_ms if load == "paced" else 0
            for name, cmd in RUNS[rnd % len(RUNS) :] + RUNS[: rnd % len(RUNS)]:
                run = f"{name} {load}"
                out[run] = measure(lab, exe, sw.socket, cmd, args.duration, pace)
                out[run]["table"] = flows
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--flows", type=int, default=200_000, help="half-open flows to fill with")
    ap.add_argument("--baseline", help="another tree (its .venv/bin/pktswitch) beside this one")
    ap.add_argument("--pace-ms", type=int, default=10, help="the paced load's delay")
    args = ap.parse_args()
    if not 1000 <= args.flows <= MAX_FLOWS:
        ap.error(f"--flows: 1000..{MAX_FLOWS}")
    ensure_tools()
    trees = ["current", *([args.baseline] if args.baseline else [])]
    rows: dict[str, list[dict[str, dict[str, float]]]] = {t: [] for t in trees}
    with Lab(checksum_oracle=False) as lab:
        lab.exec("lb", "ip", "route", "add", "blackhole", SPOOFED)
        for b in lab.BACKENDS:  # nat mode: the backends see the flood; no SYN-ACK resent
            lab.exec(b.lower(), "sysctl", "-qw", "net.ipv4.tcp_synack_retries=0")
        for rnd in range(1, args.rounds + 1):
            for tree in trees:
                got = run_tree(lab, tree, args, rnd)
                rows[tree].append(got)
                for name, r in got.items():
                    mark = "  (steal above 5 %)" if r["steal_pct"] > 5 else ""
                    print(f"round {rnd} {tree} {name:17} table={r['table']:.0f} "
                          f"rps={r['rps']:.0f} p99={r.get('p99_ms', 0):.2f}ms "
                          f"listings={r['listings']:.0f} each={r['listing_s']:.2f}s "
                          f"steal={r['steal_pct']:.1f}%{mark}", flush=True)  # fmt: skip
    print(f"\nmedians over {args.rounds} round(s), {args.flows} flows asked, wrk -t1 -c32 "
          f"keep-alive {args.duration} s, flat out and paced ({args.pace_ms} ms)")  # fmt: skip
    print("tree | run | rps | p99 ms | p99 / alone | listings | one listing s")
    for tree, load in ((t, load) for t in trees for load in LOADS):
        alone = statistics.median(g[f"alone {load}"].get("p99_ms", 0) for g in rows[tree])
        for name, _ in RUNS:
            rs = [g[f"{name} {load}"] for g in rows[tree]]
            p99 = statistics.median(r.get("p99_ms", 0) for r in rs)
            print(f"{tree} | {name} {load} | {statistics.median(r['rps'] for r in rs):.0f} | "
                  f"{p99:.2f} | {p99 / alone if alone else 0:.2f} | "
                  f"{statistics.median(r['listings'] for r in rs):.0f} | "
                  f"{statistics.median(r['listing_s'] for r in rs):.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
