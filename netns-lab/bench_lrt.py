"""Ways to run least response time, on real packets in the netns lab: which serves a slow
backend better. Run as root:

    .venv/bin/python netns-lab/bench_lrt.py                 # 3 rounds of 20 s per variant
    .venv/bin/python netns-lab/bench_lrt.py --rounds 1 --duration 10 --variants lrt
    .venv/bin/python netns-lab/bench_lrt.py --baseline /tmp/wt-old  # and another tree's lrt

Variants:
  lrt       the service's scheduler is `lrt`: C scores every backend, smoothed response time
            * (overhead + 1) / weight, the estimates written into C with every sample
            (docs/architecture.md), and takes the least
  program   the service's scheduler is `wrr`, and this script is the control loop that turns
            the same estimates into a weighted program every --interval seconds: weight =
            100 * fastest estimate / the backend's (at least 1, so that a slow backend still
            gets the samples that tell when it is fast again), written with `set_weight`, as
            a Python control plane recomputing a program would
  baseline  with --baseline DIR: `lrt` as the pktswitch of DIR (a git worktree of an earlier
            commit) runs it; before 2026-12 that was two random choices (draw two backends,
            keep the one of lower score)

Each run: backends A and B answer at once, C after --slow ms; --workers clients (the client
namespace, netns-lab/timedload.py) each make one request on a new connection after another
for --duration s; at --turn s B turns slow too (--later ms; SIGUSR1 to netns-lab/slowhttp.py).
Per variant, the median over rounds of: C's share of the requests before the turn, the
latency of requests before and after it (mean and p99), B's share of the requests started in
the first second after the turn and in the rest of the run, and B's and C's together there.
The variants alternate run by run (lrt program lrt program ...), and each run's steal
(/proc/stat) is printed; a run with steal above 5 % says so. It prints figures; it is not a
timed test.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labnet import Lab
from steal import cpu_ticks, steal_pct
from switchlab import LAB_SECRET, Switch, config_text, service_text

from pktswitch.control.client import call

LAB_DIR = Path(__file__).parent
PORT = 8080
VARIANTS = ("lrt", "program", "baseline")


def reweigh(sock: str, service: str, last: dict[str, int]) -> None:
    """One step of the program's control loop: weights from the switch's estimates."""
    rows = [r for r in call(sock, "backends") if r["service"] == service]
    rts = {r["backend"]: r["rt_ms"] for r in rows}
    known = [rt for rt in rts.values() if rt]
    if not known:
        return
    fastest = min(known)
    for name, rt in rts.items():
        weight = max(1, round(100 * fastest / rt)) if rt else 100
        if last.get(name) != weight:
            call(sock, "set_weight", service=service, backend=name, weight=weight)
            last[name] = weight


@contextlib.contextmanager
def control_loop(sock: str, service: str, interval: float) -> Iterator[None]:
    stop = threading.Event()
    last: dict[str, int] = {}

    def loop() -> None:
        while not stop.wait(interval):
            reweigh(sock, service, last)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def run(lab: Lab, variant: str, args: argparse.Namespace, n: int) -> dict[str, float]:
    """Run n of the bench: each uses the next SNAT address, since the backends keep TIME_WAIT
    toward the last one's ports (a SYN that lands on one waits for its retransmission)."""
    delays = {"A": ("0", "0"), "B": ("0", str(args.later / 1000)), "C": (str(args.slow / 1000),)}
    slowhttp = (sys.executable, str(LAB_DIR / "slowhttp.py"), str(PORT))
    servers = {name: lab.spawn(name.lower(), *slowhttp, name, *d) for name, d in delays.items()}
    try:
        for ip in lab.BACKENDS.values():
            lab.wait_tcp("cli", ip, PORT)
        scheduler = "wrr" if variant == "program" else "lrt"
        timed = service_text(lab, "timed", PORT, scheduler, {"A": 100, "B": 100, "C": 100})
        snat = f"203.0.113.{1 + n % 9}"
        exe = str(Path(args.baseline) / ".venv/bin/pktswitch") if variant == "baseline" else None
        old = variant == "baseline"  # (an older tree may not know hash_secret)
        config = config_text(lab, snat=snat, extra=[timed], hash_secret=None if old else LAB_SECRET)
        with Switch(lab, config, **({"exe": exe} if exe else {})) as sw:
            loop = control_loop(sw.socket, "timed", args.interval)
            with loop if variant == "program" else contextlib.nullcontext():
                before = cpu_ticks(Path("/proc/stat").read_text())
                client = (sys.executable, str(LAB_DIR / "timedload.py"), lab.VIP, str(PORT))
                load = lab.spawn("cli", *client, str(args.workers), str(args.duration))
                start = time.monotonic()
                time.sleep(args.turn)
                servers["B"].send_signal(10)  # SIGUSR1: B turns slow
                turned = time.monotonic()
                load.wait(timeout=args.duration + 30)
                after = cpu_ticks(Path("/proc/stat").read_text())
                stats = sw.stats()
        log = lab.log_path(load)
        assert log is not None
        lines = log.read_text().splitlines()
    finally:
        for p in servers.values():
            lab.stop(p)
    fails = collections.Counter(ln.split(maxsplit=2)[2] for ln in lines if " fail " in ln)
    if fails:
        said = {k: stats[k] for k in ("dropped", "snat_exhausted", "flows_reused", "to_python")}
        print(f"  {variant}: failed requests {dict(fails)}; the switch: {said}", flush=True)
    return figures(lines, start, turned, steal_pct(before, after))


def figures(lines: list[str], start: float, turned: float, steal: float) -> dict[str, float]:
    got = [ln.split(maxsplit=2) for ln in lines if ln and ln != "done"]
    reqs = [(float(t), float(lat), who) for t, lat, who in got]
    warm = [r for r in reqs if start + 1 <= r[0] < turned]  # the first second warms up
    post = [r for r in reqs if r[0] >= turned]
    first = [r for r in post if r[0] < turned + 1]
    rest = [r for r in post if r[0] >= turned + 1]

    def share(rs: list[tuple[float, float, str]], who: str) -> float:
        return 100 * sum(1 for r in rs if r[2] == who) / max(1, len(rs))

    def pct(rs: list[tuple[float, float, str]], q: float) -> float:
        lats = sorted(r[1] for r in rs)
        return 1000 * lats[min(len(lats) - 1, int(q * len(lats)))] if lats else 0.0

    def mean(rs: list[tuple[float, float, str]]) -> float:
        return 1000 * statistics.fmean(r[1] for r in rs) if rs else 0.0

    return {
        "requests": len(reqs),
        "failed": sum(1 for r in reqs if r[2].startswith("fail")),
        "C_pre_pct": share(warm, "C"),
        "pre_mean_ms": mean(warm),
        "pre_p99_ms": pct(warm, 0.99),
        "B_first_s_pct": share(first, "B"),
        "B_rest_pct": share(rest, "B"),
        "slow_rest_pct": share(rest, "B") + share(rest, "C"),
        "post_mean_ms": mean(post),
        "post_p99_ms": pct(post, 0.99),
        "steal_pct": steal,
    }


COLUMNS = (
    ("requests", "requests", "{:.0f}"),
    ("failed", "failed", "{:.0f}"),
    ("C_pre_pct", "C% before", "{:.1f}"),
    ("pre_mean_ms", "mean ms", "{:.1f}"),
    ("pre_p99_ms", "p99 ms", "{:.1f}"),
    ("B_first_s_pct", "B% 1st s", "{:.1f}"),
    ("B_rest_pct", "B% rest", "{:.1f}"),
    ("slow_rest_pct", "B+C% rest", "{:.1f}"),
    ("post_mean_ms", "mean ms after", "{:.1f}"),
    ("post_p99_ms", "p99 ms after", "{:.1f}"),
    ("steal_pct", "steal%", "{:.1f}"),
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--turn", type=float, default=8, help="seconds in, when B turns slow")
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--slow", type=float, default=50, help="C's delay, ms")
    ap.add_argument("--later", type=float, default=80, help="B's delay after the turn, ms")
    ap.add_argument("--interval", type=float, default=1.0, help="the program's, seconds")
    ap.add_argument("--variants", help="of: " + ", ".join(VARIANTS) + " (default: all)")
    ap.add_argument("--baseline", help="a tree whose .venv/bin/pktswitch runs `baseline`")
    args = ap.parse_args()
    if not 1 < args.turn < args.duration - 2:
        ap.error("--turn must leave a second before it and two after it")
    default = VARIANTS if args.baseline else VARIANTS[:2]
    variants = args.variants.split(",") if args.variants else list(default)
    if not variants or set(variants) - set(VARIANTS):
        ap.error(f"--variants: a comma-separated list of {', '.join(VARIANTS)}")
    if "baseline" in variants and not args.baseline:
        ap.error("the baseline variant needs --baseline DIR")
    rows: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    with Lab(checksum_oracle=False) as lab:
        for rnd in range(1, args.rounds + 1):
            for v in variants:
                row = run(lab, v, args, sum(len(r) for r in rows.values()))
                rows[v].append(row)
                cells = " ".join(f"{k}={row[k]:.1f}" for k, _, _ in COLUMNS)
                mark = "  (steal above 5 %)" if row["steal_pct"] > 5 else ""
                print(f"round {rnd} {v:8} {cells}{mark}", flush=True)
    print(f"\nmedians over {args.rounds} round(s); C answers after {args.slow:g} ms, B after "
          f"{args.later:g} ms from {args.turn:g} s; {args.workers} clients")  # fmt: skip
    print("variant  " + " | ".join(h for _, h, _ in COLUMNS))
    for v in variants:
        cells = [f.format(statistics.median(r[k] for r in rows[v])) for k, _, f in COLUMNS]
        print(f"{v:8} " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
