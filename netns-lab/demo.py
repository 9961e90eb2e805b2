"""The pktswitch lab demo: build the lab, run the switch, send real traffic, show what it did.

    client ns 198.51.100.2 --> lb ns: VIP 203.0.113.10 routed into the TUN device, pktswitch
                               rewrites and writes back --> backends A, B, C (192.0.2.1-.3)

For each NAT mode (full NAT, then NAT): 30 HTTP requests through the VIP and the count per
backend; a few keep-alive connections held open and the live flow table; a short iperf3 run;
the switch's counters. Then Ctrl-C to the switch and the lab is torn down. Run as root.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labnet import Lab
from switchlab import BULK_PORT, Switch, config_text

from pktswitch.sched.registry import SCHEDULERS

HERE = Path(__file__).resolve().parent


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def wait_for_line(path: Path, word: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if word in text.splitlines():
            return text
        time.sleep(0.05)
    raise TimeoutError(f"no {word!r} in {path} after {timeout} s")


def show(
    lab: Lab,
    mode: str,
    requests: int,
    hold: int,
    iperf_seconds: int,
    scheduler: str,
    weights: dict[str, int],
) -> None:
    banner(f"mode {mode}, scheduler {scheduler}: starting pktswitch in {lab.ns['lb']}")
    with Switch(lab, config_text(lab, mode, scheduler=scheduler, weights=weights)) as sw:
        print(sw.config_path.read_text().split("\n\n")[0])

        banner(f"{requests} HTTP requests from the client to http://{lab.VIP}/")
        counts([lab.curl(f"http://{lab.VIP}/").strip() for _ in range(requests)])

        banner(f"{hold} keep-alive connections held open; the live flow table")
        holder = lab.spawn(
            "cli", sys.executable, str(HERE / "holdconn.py"), lab.VIP, "80", str(hold), "30"
        )
        log = lab.log_path(holder)
        assert log is not None
        for line in wait_for_line(log, "ready", 10).splitlines()[:-1]:
            print(f"  client {line}")
        print(sw.cli("flows", "--state", "ESTABLISHED").stdout.rstrip())
        lab.stop(holder)

        banner("the backends as the switch sees them")
        print(sw.cli("backends").stdout.rstrip())

        banner("one more request, traced: every packet before and after the rewrite")
        tracer = subprocess.Popen(
            sw.command("trace", "--count", "6"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for_trace(sw)
        lab.curl(f"http://{lab.VIP}/")
        out, _ = tracer.communicate(timeout=10)
        print(out.rstrip())

        if iperf_seconds:
            banner(f"iperf3 for {iperf_seconds} s through {lab.VIP}:{BULK_PORT}")
            r = lab.exec(
                "cli",
                "iperf3", "-c", lab.VIP, "-p", str(BULK_PORT), "-t", str(iperf_seconds), "-J",
                timeout=iperf_seconds + 20,
            )  # fmt: skip
            end = json.loads(r.stdout)["end"]
            gbit = end["sum_received"]["bits_per_second"] / 1e9
            print(f"  received {gbit:.2f} Gbit/s, retransmits {end['sum_sent']['retransmits']}")

        banner("switch counters")
        print(sw.cli("stats").stdout.rstrip())
        rc = sw.stop()
        left = sw.leftovers()
        print(f"\npktswitch stopped by SIGINT (exit {rc}); left on the host: {left or 'nothing'}")
        if rc != 0 or left:
            raise SystemExit(f"pktswitch did not stop cleanly: exit {rc}, left {left}")


def wait_for_trace(sw: Switch, timeout: float = 5) -> None:
    """Until the switch has a trace subscriber (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sw.stats().get("tracing"):
            return
        time.sleep(0.02)
    raise TimeoutError("the trace did not start")


def megaproxy(lab: Lab, requests: int) -> None:
    """iphash and the mega proxy problem: clients behind one address all reach one backend."""
    banner("iphash: 20 clients, each from its own address, one request each")
    with Switch(lab, config_text(lab, scheduler="iphash")):
        got = [lab.curl(f"http://{lab.VIP}/", source=ip).strip() for ip in lab.EXTRA_CLIENT_IPS]
        counts(got)
    banner(f"iphash: {requests} requests from behind one proxy address ({lab.CLIENT_IP})")
    with Switch(lab, config_text(lab, scheduler="iphash")):
        counts([lab.curl(f"http://{lab.VIP}/").strip() for _ in range(requests)])
    banner(f"the mitigation, hash_key = ip+port: the same {requests} requests")
    cfg = config_text(lab, scheduler="iphash", options={"hash_key": "ip+port"})
    with Switch(lab, cfg):
        counts([lab.curl(f"http://{lab.VIP}/").strip() for _ in range(requests)])


def failover(lab: Lab) -> None:
    """A steady stream of new connections while backend B dies and comes back."""
    check = {"check": "tcp", "interval": 0.5, "timeout": 0.4, "fall": 2, "rise": 2}
    banner("failover: health checks every 0.5 s, down after 2 failures, up after 2 passes")
    with Switch(lab, config_text(lab, health={**check, "passive": True})) as sw:
        stream = lab.spawn(
            "cli", sys.executable, str(HERE / "reqstream.py"), lab.VIP, "80", "0.05", "8", "1"
        )
        time.sleep(2)
        killed = time.monotonic()
        lab.stop_http("b")
        print("  B's web server stopped")
        while next(r for r in sw.stats_backends() if r["backend"] == "B")["health"] == "up":
            time.sleep(0.01)
        detected = time.monotonic()
        row = next(r for r in sw.stats_backends() if r["backend"] == "B")
        print(f"  detected after {detected - killed:.2f} s: {row['health_reason']}")
        time.sleep(2)
        lab.start_http("b")
        print("  B's web server started again")
        log = lab.log_path(stream)
        assert log is not None
        while "done" not in log.read_text().split("\n"):
            time.sleep(0.1)
        lines = [ln.split(" ", 1) for ln in log.read_text().splitlines() if ln != "done"]
        failed = [(float(t), what) for t, what in lines if what.startswith("fail")]
        print(f"  requests sent {len(lines)}, failed {len(failed)}")
        for t, what in failed:
            print(f"    failed at +{t - killed:.2f} s after the stop: {what}")
        counts([what.split()[1] for _, what in lines if what.startswith("ok")])
        print(sw.cli("backends").stdout.rstrip())


def counts(answers: list[str]) -> None:
    c = collections.Counter(answers)
    for name in sorted(c):
        print(f"  backend {name}: {c[name]:3d} {'#' * c[name]}")
    print(f"  total {sum(c.values())}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("fullnat", "nat", "both"), default="both")
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--hold", type=int, default=3, help="connections held open for the table")
    ap.add_argument("--iperf", type=int, default=3, metavar="SECONDS", help="0 to skip")
    ap.add_argument("--scheduler", default="rr", choices=sorted(SCHEDULERS))
    ap.add_argument("--weights", default="", metavar="A=2,B=3,C=5", help="backend weights")
    ap.add_argument("--megaproxy", action="store_true", help="the iphash mega-proxy demo only")
    ap.add_argument("--failover", action="store_true", help="the health-check demo only")
    args = ap.parse_args()
    weights = {k: int(v) for k, v in (w.split("=") for w in args.weights.split(",") if w)}
    modes = ("fullnat", "nat") if args.mode == "both" else (args.mode,)
    with Lab() as lab:
        print(f"lab {lab.prefix}: namespaces {', '.join(lab.ns.values())}")
        if args.megaproxy:
            megaproxy(lab, args.requests)
        elif args.failover:
            failover(lab)
        else:
            for mode in modes:
                show(lab, mode, args.requests, args.hold, args.iperf, args.scheduler, weights)
    print(f"\nlab {lab.prefix} removed")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
