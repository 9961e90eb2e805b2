"""Benchmark: pktswitch beside the kernel's NAT, HAProxy and a naive Python TUN forwarder, in
the same netns lab, the variants alternating load by load, medians and paired ratios. Run as
root:

    make bench                     # 3 rounds x 10 s per load
    make bench ARGS="--rounds 1 --duration 3 --variants pktswitch,haproxy"

A round runs each load in turn, and each load on every variant in turn, one short slice each
(a variant is started for its slice and stopped after it): round 1 bulk A B, conn A B, ka A B;
round 2 bulk A B, ... So the samples a ratio compares are neighbours in time, and a ratio is
the median of the ratios of the pairs of one round (min..max over the pairs), not a ratio of
medians taken minutes apart. This machine is shared: a hypervisor's steal (the `steal` ticks
of /proc/stat's cpu line over all its ticks during the load) took up to 83 % of the CPU within
one load. A slice with steal above --max-steal (5 %) runs again, up to --retries (2) times;
one still above it is kept in the --json rows but marked dropped, left out of the medians and
the pairs, and counted, with its steal, in the table's "dropped" column.

Per variant and round, from the client namespace, each load bounded by --duration:
  bulk  iperf3 -c VIP -t D                              one stream, Gbit/s at the receiver
  conn  wrk -t1 -c32 -d D -H 'Connection: close' URL    new connections per second
  ka    wrk -t1 -c32 -d D --latency URL                 keep-alive requests/s, p50, p99
  udp   iperf3 -u -l 64 at 10, 20, ... 240 kpps         datagrams/s at the highest rate that
                                                        lost none (bench_udp.py; variants
                                                        that balance UDP only)
and the balancer's CPU (utime+stime / wall, 100 = one core) and RSS (the largest after any one
load of the round); with RPS the kernel's work on what pktswitch writes runs in softirq on any
CPU and is not in its CPU%. The lab's CPU (every core's busy time from /proc/stat, 200 = both
of this machine's: the whole machine's, so nothing else should run meanwhile) is measured too,
and divided by the requests made: CPU microseconds per connection or request, whoever spent
them (client, balancer, backends, kernel); where the lab's CPU is near all of the machine,
that cost per connection decides the rate. Everything (client, balancer, three backends, load
generators) shares this machine's cores: the figures are what the whole lab does, so only
ratios from one run mean much.

Variants:
  pktswitch        full NAT, TUN offloads on (the default config)
  pktswitch-nooff  the same with `offload = false`
  pktswitch-rps    the same with `rps_cpus = "all"`: the kernel's work on each packet the
                   switch writes is queued to a CPU chosen by the flow's hash (see
                   docs/architecture.md)
  pktswitch-wlc    the same with the web service's scheduler `wlc` (rr otherwise)
  nft-nat          kernel nftables DNAT (numgen round robin) + SNAT
  haproxy          HAProxy `mode tcp`, one thread, bound on the VIP
  naive-tun        netns-lab/naive_tun.py: one read, dict lookup, struct checksums per packet
  baseline         with --baseline DIR: pktswitch's default config run from DIR, another
                   tree (a git worktree of an earlier commit), to compare commits side by side

Pitfalls handled: HAProxy terminates TCP on the VIP and leaves TIME_WAIT sockets in the
switch's namespace; TCP early demux would then attach a forwarded SYN that reuses a client
port to such a socket and the kernel drops it, so forwarding variants run with
net.ipv4.tcp_early_demux=0 (it only speeds up local delivery). Backends keep TIME_WAIT toward
the SNAT address for 60 s after a run, so each pktswitch and nft run uses the next SNAT
address: a SYN that lands on such a TIME_WAIT with an older timestamp (another sender's clock)
is dropped by PAWS, and the kernel NAT's source ports are the client's own, which HAProxy's
connections from the switch's address had used a moment before. The lab keeps the switch
ports' tx offloads (Lab(checksum_oracle=False)), as a deployment would.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_udp import udp_search
from labnet import Lab
from steal import busy_ticks, cpu_ticks, kept, pair_ratios, spread, steal_pct
from switchlab import BULK_PORT, Switch, config_text, service_text

HERE = Path(__file__).resolve().parent
TOOLS = {"wrk": "wrk", "haproxy": "haproxy", "nft": "nftables", "iperf3": "iperf3"}
HZ = 100  # os.sysconf("SC_CLK_TCK") on Linux
STEAL_MAX_PCT = 5.0  # above it the hypervisor, not the variant, sets the figure (83 % was seen)
RETRIES = 2  # each retry moves a slice further from its pair's neighbour; 3 tries bound that


def ensure_tools() -> None:
    missing = [pkg for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None]
    if missing:
        print(f"installing {' '.join(missing)}", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True)


def proc_ticks(pid: int | None) -> int:
    if pid is None:
        return 0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple[int, ...]:
    """All CPUs' ticks by kind, from /proc/stat (see steal.py: busy_ticks, steal_pct)."""
    return cpu_ticks(Path("/proc/stat").read_text())


def rss_kib(pid: int | None) -> int | None:
    if pid is None:
        return None
    m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) if m else None


# ------------------------------------------------------------------------------- variants
class Variant:
    name = ""
    forwarding = True  # a router path: run with tcp_early_demux off (see the docstring)
    udp = True  # balances UDP: runs the udp load

    def __init__(self, lab: Lab, round_no: int) -> None:
        self.lab = lab
        self.round_no = round_no

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def pid(self) -> int | None:
        return None


class PktSwitch(Variant):
    name = "pktswitch"
    offload = True
    rps = "off"
    scheduler = "rr"
    runs = 0  # every run takes the next SNAT address (see the docstring)

    def start(self) -> None:
        snat = f"203.0.113.{1 + PktSwitch.runs % 9}"
        PktSwitch.runs += 1
        cfg = config_text(
            self.lab,
            offload=self.offload,
            snat=snat,
            scheduler=self.scheduler,
            switch_keys={"rps_cpus": self.rps},
            extra=[service_text(self.lab, "bulk-udp", BULK_PORT, "rr", {"A": 1}, protocol="udp")],
        )
        self.sw = Switch(self.lab, cfg)
        self.sw.start()

    def stop(self) -> None:
        self.sw.stop()

    def pid(self) -> int | None:
        return self.sw.proc.pid if self.sw.proc else None


class PktSwitchBaseline(PktSwitch):
    """The default config on another tree's pktswitch (--baseline DIR: a git worktree of an
    earlier commit, set up with its own tools/setup.sh), alternating with this tree's."""

    name = "baseline"
    exe = ""
    udp = False  # (a tree from before UDP services may refuse the config)

    def start(self) -> None:
        snat = f"203.0.113.{1 + PktSwitch.runs % 9}"
        PktSwitch.runs += 1
        cfg = config_text(
            self.lab, offload=self.offload, snat=snat, scheduler=self.scheduler, hash_secret=None
        )
        self.sw = Switch(self.lab, cfg, exe=self.exe)
        self.sw.start()


class PktSwitchNoOffload(PktSwitch):
    name = "pktswitch-nooff"
    offload = False


class PktSwitchRps(PktSwitch):
    name = "pktswitch-rps"
    rps = "all"


class PktSwitchWlc(PktSwitch):
    name = "pktswitch-wlc"
    scheduler = "wlc"


NFT = """table ip pks_bench {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr VIP tcp dport 80 dnat to numgen inc mod 3 map {
      0 : 192.0.2.1, 1 : 192.0.2.2, 2 : 192.0.2.3 }
    ip daddr VIP tcp dport 5201 dnat to 192.0.2.1
    ip daddr VIP udp dport 5201 dnat to 192.0.2.1
  }
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "br0" ct status dnat snat to SNAT
  }
}
"""


class NftNat(Variant):
    name = "nft-nat"
    runs = 0  # every run takes the next source address, as pktswitch's SNAT (see the docstring)

    def start(self) -> None:
        snat = f"203.0.113.{21 + NftNat.runs % 9}"
        NftNat.runs += 1
        rules = NFT.replace("VIP", self.lab.VIP).replace("SNAT", snat)
        subprocess.run(
            ["ip", "netns", "exec", self.lab.ns["lb"], "nft", "-f", "-"],
            input=rules, text=True, check=True,
        )  # fmt: skip

    def stop(self) -> None:
        self.lab.exec("lb", "nft", "delete", "table", "ip", "pks_bench", check=False)


HAPROXY = """global
  maxconn 9000
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend web
  bind VIP:80
  default_backend web
backend web
  balance roundrobin
  server a 192.0.2.1:80
  server b 192.0.2.2:80
  server c 192.0.2.3:80
frontend iperf
  bind VIP:5201
  default_backend iperf
backend iperf
  server a 192.0.2.1:5201
"""


class HAProxy(Variant):
    name = "haproxy"
    forwarding = False
    udp = False  # (mode tcp: HAProxy balances no UDP)

    def start(self) -> None:
        cfg = self.lab.run_dir / "haproxy.cfg"
        cfg.write_text(HAPROXY.replace("VIP", self.lab.VIP))
        self.lab.exec("lb", "ip", "addr", "replace", f"{self.lab.VIP}/32", "dev", "lo")
        self.proc = self.lab.spawn("lb", "haproxy", "-db", "-f", str(cfg), log="haproxy.log")
        self.lab.wait_tcp("cli", self.lab.VIP, 80)

    def stop(self) -> None:
        self.lab.stop(self.proc)
        self.lab.exec("lb", "ip", "addr", "del", f"{self.lab.VIP}/32", "dev", "lo", check=False)

    def pid(self) -> int | None:
        return self.proc.pid


class NaiveTun(Variant):
    name = "naive-tun"
    udp = False  # (it forwards TCP only)

    def start(self) -> None:
        snat = f"203.0.113.{11 + self.round_no % 9}"
        self.proc = self.lab.spawn(
            "lb", sys.executable, str(HERE / "naive_tun.py"), "naivet0", self.lab.VIP, snat,
            *self.lab.BACKENDS.values(), log="naive.log",
        )  # fmt: skip
        self.lab.wait_tcp("cli", self.lab.VIP, 80)

    def stop(self) -> None:
        self.lab.stop(self.proc)

    def pid(self) -> int | None:
        return self.proc.pid


VARIANTS: dict[str, type[Variant]] = {
    v.name: v
    for v in (PktSwitch, PktSwitchNoOffload, PktSwitchRps, PktSwitchWlc, NftNat, HAProxy, NaiveTun)
}
BASELINE = PktSwitchBaseline  # with --baseline only

# -------------------------------------------------------------------------------- loads
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(lab: Lab, duration: int, close: bool, pace_ms: int = 0) -> dict[str, float]:
    """wrk -t1 -c32 for `duration` s, flat out, or with `pace_ms` between each connection's
    answer and its next request (wrk's delay(): a load that leaves the CPUs room, so that
    its latency shows what holds packets back rather than who gets the CPU)."""
    args = ["wrk", "-t1", "-c32", f"-d{duration}s", "--latency"]
    if close:
        args += ["-H", "Connection: close"]
    if pace_ms:
        script = lab.run_dir / f"pace{pace_ms}.lua"
        script.write_text(f"function delay()\n  return {pace_ms}\nend\n")
        args += ["-s", str(script)]
    out = lab.exec("cli", *args, f"http://{lab.VIP}/", timeout=duration + 30).stdout
    res: dict[str, float] = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        if m:
            res[f"p{pct}_ms"] = float(m.group(1)) * UNITS[m.group(2)]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["errors"] = errors + (int(m.group(1)) if m else 0)
    return res


def iperf(lab: Lab, duration: int) -> dict[str, float]:
    """One iperf3 stream; a failed run (the server still busy with the previous test, say)
    is retried once, then recorded as missing rather than stopping the benchmark."""
    for attempt in range(2):
        r = lab.exec(
            "cli", "iperf3", "-c", lab.VIP, "-p", str(BULK_PORT), "-t", str(duration), "-J",
            timeout=duration + 30, check=False,
        )  # fmt: skip
        doc = json.loads(r.stdout or "{}")
        end = doc.get("end", {})
        if "sum_received" in end:
            return {
                "gbit": end["sum_received"]["bits_per_second"] / 1e9,
                "retrans": end["sum_sent"].get("retransmits", 0),
            }
        print(f"   iperf3 failed (attempt {attempt + 1}): {doc.get('error', r.stderr)}")
        time.sleep(3)
    return {}


LOADS = {
    "bulk": lambda lab, duration: iperf(lab, duration),
    "conn": lambda lab, duration: wrk(lab, duration, close=True),
    "ka": lambda lab, duration: wrk(lab, duration, close=False),
    "udp": lambda lab, duration: udp_search(lab, duration),
}


def measure(lab: Lab, v: Variant, load: str, duration: int) -> dict[str, float | None]:
    """One load on a running variant: its figures, CPU and steal, as "<load>_<metric>"."""
    t0, c0, m0 = time.monotonic(), proc_ticks(v.pid()), machine_ticks()
    res = LOADS[load](lab, duration)
    wall = time.monotonic() - t0
    m1 = machine_ticks()
    busy = (busy_ticks(m1) - busy_ticks(m0)) / HZ  # CPU seconds of the whole lab
    row: dict[str, float | None] = {f"{load}_{k}": val for k, val in res.items()}
    pid = v.pid()
    row[f"{load}_cpu"] = (proc_ticks(pid) - c0) / HZ / wall * 100 if pid else None
    row[f"{load}_lab_cpu"] = busy / wall * 100
    if res.get("rps"):  # CPU microseconds per request, the whole lab's
        row[f"{load}_lab_us"] = busy / wall / res["rps"] * 1e6
    row[f"{load}_steal_pct"] = steal_pct(m0, m1)
    row["rss_mib"] = (rss_kib(pid) or 0) / 1024 or None
    time.sleep(1)  # let the last connections of one load close before the next one
    return row


def run_slice(
    lab: Lab, v: Variant, load: str, duration: int, max_steal: float, retries: int
) -> dict[str, float | None]:
    """One load on a running variant, again while the hypervisor stole more than max_steal %
    of the CPU, at most `retries` more times; the last try is kept, marked dropped if its
    steal is still above."""
    for attempt in range(1 + retries):
        row = measure(lab, v, load, duration)
        steal = row[f"{load}_steal_pct"] or 0.0
        if steal <= max_steal:
            break
        if attempt < retries:
            print(f"   steal {steal:.1f} % > {max_steal:g} %: again ({attempt + 2}/{1 + retries})")
    row[f"{load}_tries"] = attempt + 1
    if steal > max_steal:
        row[f"{load}_dropped"] = 1
        print(f"   steal {steal:.1f} % after {attempt + 1} tries: dropped from the medians")
    return row


# ------------------------------------------------------------------------------- report
COLUMNS = [
    ("bulk_gbit", "bulk Gbit/s", "{:.2f}"),
    ("bulk_cpu", "CPU% bulk", "{:.0f}"),
    ("conn_rps", "conn/s", "{:.0f}"),
    ("conn_errors", "conn errors", "{:.0f}"),
    ("conn_cpu", "CPU% conn", "{:.0f}"),
    ("conn_lab_cpu", "lab CPU% conn", "{:.0f}"),
    ("conn_lab_us", "lab CPU us/conn", "{:.0f}"),
    ("ka_rps", "keep-alive req/s", "{:.0f}"),
    ("ka_p50_ms", "ka p50 ms", "{:.3f}"),
    ("ka_p99_ms", "ka p99 ms", "{:.3f}"),
    ("ka_cpu", "CPU% ka", "{:.0f}"),
    ("ka_lab_us", "lab CPU us/req", "{:.1f}"),
    ("udp_kpps", "udp kpps at 0 % loss", "{:.1f}"),
    ("udp_cpu", "CPU% udp", "{:.0f}"),
    ("rss_mib", "RSS MiB", "{:.1f}"),
]
TARGETS = {  # the project's targets: pktswitch / reference >= value
    ("bulk_gbit", "haproxy"): 1.4,
    ("bulk_gbit", "nft-nat"): 0.6,
    ("conn_rps", "haproxy"): 1.0,
    ("conn_rps", "nft-nat"): 0.8,
    ("ka_rps", "haproxy"): 1.2,
    ("ka_rps", "nft-nat"): 0.85,
    ("udp_kpps", "nft-nat"): 0.6,  # as bulk: a userspace hop against the kernel's own
}


def med(values: list[float]) -> str:
    return "-" if not values else f"{statistics.median(values):.6g}"


def dropped_cell(rows: list[dict[str, float | None]]) -> str:
    """How many of a variant's samples were dropped, and which, with their steal."""
    drops = [
        f"{load} r{r + 1} {row[f'{load}_steal_pct']:.1f} %"
        for r, row in enumerate(rows)
        for load in LOADS
        if row.get(f"{load}_dropped")
    ]
    return f"{len(drops)}: " + ", ".join(drops) if drops else "0"


def report(
    results: dict[str, list[dict[str, float | None]]],
    max_steal: float = STEAL_MAX_PCT,
    retries: int = RETRIES,
) -> str:
    drop_head = f"dropped (steal > {max_steal:g} % after {retries} retries)"
    heads = [h for _, h, _ in COLUMNS] + ["steal %", drop_head]
    lines = ["| variant | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for name, rows in results.items():
        cells = []
        for key, _, fmt in COLUMNS:
            vals = kept(rows, key)
            if not vals:
                cells.append("-")
                continue
            span = f" ({fmt.format(min(vals))}..{fmt.format(max(vals))})" if len(vals) > 1 else ""
            cells.append(fmt.format(statistics.median(vals)) + span)
        steal = [v for load in LOADS for v in kept(rows, f"{load}_steal_pct")]
        s = spread(steal)
        cells.append(f"{s[0]:.1f} ({s[1]:.1f}..{s[2]:.1f})" if s else "-")
        cells.append(dropped_cell(rows))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ratios = []
    for name in (n for n in results if n.startswith("pktswitch")):
        for (key, ref), target in TARGETS.items():
            if ref not in results:
                continue
            pairs = pair_ratios(results[name], results[ref], key)
            s = spread(pairs)
            if s is None:
                ratios.append(f"| {name} {key} / {ref} | - | 0 | >= {target} (no pair) |")
                continue
            verdict = "met" if s[0] >= target else "NOT met"
            cell = f"{s[0]:.2f} ({s[1]:.2f}..{s[2]:.2f})"
            ratios.append(
                f"| {name} {key} / {ref} | {cell} | {len(pairs)} | >= {target} ({verdict}) |"
            )
    if ratios:
        lines += [
            "",
            "| ratio | median of pairs (min..max) | pairs | target |",
            "|---|---|---|---|",
        ]
        lines += ratios
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per load run")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--loads", default=",".join(LOADS), help="a subset of " + ",".join(LOADS))
    ap.add_argument(
        "--max-steal", type=float, default=STEAL_MAX_PCT,
        help="%% of the CPU a hypervisor may steal during a load before it runs again",
    )  # fmt: skip
    ap.add_argument("--retries", type=int, default=RETRIES, help="more tries of a stolen load")
    ap.add_argument("--json", type=Path, help="also write the raw rows here")
    ap.add_argument(
        "--baseline", type=Path,
        help="another tree (a worktree of an earlier commit, set up): variant `baseline`",
    )  # fmt: skip
    args = ap.parse_args()
    names = [n for n in args.variants.split(",") if n]
    if args.baseline is not None:
        exe = args.baseline.resolve() / ".venv" / "bin" / "pktswitch"
        if not exe.exists():
            ap.error(f"--baseline: no {exe} (run tools/setup.sh in {args.baseline})")
        BASELINE.exe = str(exe)
        VARIANTS[BASELINE.name] = BASELINE
    loads = [x for x in args.loads.split(",") if x]
    if set(loads) - set(LOADS):
        ap.error(f"unknown loads {sorted(set(loads) - set(LOADS))}; known: {', '.join(LOADS)}")
    unknown = set(names) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    if args.retries < 0:
        ap.error(f"--retries must be >= 0, got {args.retries}")
    ensure_tools()
    results: dict[str, list[dict[str, float | None]]] = {
        n: [{} for _ in range(args.rounds)] for n in names
    }
    with Lab(checksum_oracle=False) as lab:
        for r in range(args.rounds):
            for load in loads:
                for name in names:  # one slice each, neighbours in time for the ratios
                    if load == "udp" and not VARIANTS[name].udp:
                        continue
                    v = VARIANTS[name](lab, r)
                    demux = "0" if v.forwarding else "1"
                    lab.exec("lb", "sysctl", "-qw", f"net.ipv4.tcp_early_demux={demux}")
                    print(f"round {r + 1}/{args.rounds} {load}: {name}", flush=True)
                    v.start()
                    try:
                        part = run_slice(lab, v, load, args.duration, args.max_steal, args.retries)
                    finally:
                        v.stop()
                    row = results[name][r]
                    rss = [x for x in (row.get("rss_mib"), part.pop("rss_mib")) if x is not None]
                    row.update(part, rss_mib=max(rss) if rss else None)
                    print(
                        "   "
                        + json.dumps({k: round(x, 3) for k, x in part.items() if x is not None})
                    )
    text = report(results, args.max_steal, args.retries)
    print(
        f"\n{args.rounds} round(s) x {args.duration} s per load, variants alternating per load;"
        f" medians (min..max) of the samples kept, ratios over the pairs of a round\n"
    )
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
