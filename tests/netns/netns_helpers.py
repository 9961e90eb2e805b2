"""Helpers of the netns tests: whether they can run here, and awaiting what happens in a lab."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

LAB_DIR = Path(__file__).resolve().parents[2] / "netns-lab"
sys.path.insert(0, str(LAB_DIR))

from labnet import Lab, lab_names_in_use  # noqa: E402, F401 (re-exported)
from switchlab import BULK_PORT  # noqa: E402

T = TypeVar("T")


def netns_missing() -> str | None:
    """Why netns tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "nginx", "iperf3", "tcpdump", "curl", "ethtool", "nft", "ping"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


NETNS = [
    pytest.mark.netns,
    pytest.mark.skipif(netns_missing() is not None, reason=f"netns: {netns_missing()}"),
]


def wait_until(
    what: str, predicate: Callable[[], T], timeout: float = 10.0, step: float = 0.02
) -> T:
    """Poll `predicate` until it returns something true (bounded); raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(step)


def hold_connections(
    lab: Lab, n: int, port: int = 80, burst: bool = False
) -> tuple[subprocess.Popen[bytes], list[str]]:
    """n keep-alive connections through the VIP, one request each, held open; returns the
    holder process and its lines "CLIENT:PORT -> BACKEND". `burst`: all n SYNs leave before
    any handshake is waited for (else one connection after the other)."""
    proc = lab.spawn(
        "cli",
        sys.executable,
        str(LAB_DIR / "holdconn.py"),
        lab.VIP,
        str(port),
        str(n),
        "30",
        *(["burst"] if burst else []),
    )
    log = lab.log_path(proc)
    assert log is not None
    text = wait_until(
        "held connections", lambda: "ready" in log.read_text().split("\n") and log.read_text()
    )
    return proc, text.splitlines()[:n]


def start_kaload(
    lab: Lab,
    conns: int,
    seconds: float,
    interval: float = 0.0,
    port: int = 80,
    timeout: float = 5.0,
) -> subprocess.Popen[bytes]:
    """kaload.py in the client: `conns` keep-alive connections through the VIP making requests
    for `seconds`, a request that takes longer than `timeout` ending its connection; returns
    once they are all open."""
    proc = lab.spawn(
        "cli",
        sys.executable,
        str(LAB_DIR / "kaload.py"),
        lab.VIP,
        str(port),
        str(conns),
        str(seconds),
        str(interval),
        str(timeout),
    )
    log = lab.log_path(proc)
    assert log is not None
    wait_until("kaload connected", lambda: "ready" in log.read_text().split("\n"))
    return proc


def kaload_result(
    lab: Lab, proc: subprocess.Popen[bytes], timeout: float = 30, stop: bool = False
) -> dict[str, Any]:
    """kaload.py's summary, once it has finished by itself (or, with `stop`, once SIGTERM
    has ended it before its time)."""
    if stop:
        proc.terminate()
    proc.wait(timeout)
    log = lab.log_path(proc)
    assert log is not None
    last = log.read_text().strip().splitlines()[-1]
    return json.loads(last)  # type: ignore[no-any-return]


def bad_checksums(pcap: Path) -> tuple[int, int, list[str]]:
    """(packets, packets whose IP or TCP/UDP checksum differs from scapy's recomputation, the
    first few of those described). A UDP checksum of 0 is none (IPv4): not recomputed."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.utils import PcapReader

    n = bad = 0
    seen: list[str] = []
    with PcapReader(str(pcap)) as reader:
        for frame in reader:
            ip = frame[IP]
            l4 = TCP if TCP in ip else UDP
            fresh = ip.copy()
            del fresh.chksum
            if l4 is TCP or ip[UDP].chksum != 0:
                del fresh[l4].chksum
            fresh = IP(bytes(fresh))
            n += 1
            if (fresh.chksum, fresh[l4].chksum) != (ip.chksum, ip[l4].chksum):
                bad += 1
                if len(seen) < 5:
                    t = ip[l4]
                    what = f"{t.flags} seq {t.seq}" if l4 is TCP else "udp"
                    seen.append(
                        f"#{n} {ip.src}:{t.sport} > {ip.dst}:{t.dport} {what} "
                        f"len {ip.len} ip {ip.chksum:#06x}/{fresh.chksum:#06x} "
                        f"l4 {t.chksum:#06x}/{fresh[l4].chksum:#06x}"
                    )
    return n, bad, seen


def iperf3_captured(lab: Lab, name: str, seconds: int) -> tuple[dict[str, Any], Path]:
    """iperf3 from the client to the bulk service (20 Mbit/s for `seconds`) while backend A's
    eth0 is captured: iperf3's "end" report, and the pcap (in the lab's run_dir)."""
    cap = lab.capture("a", "eth0", f"tcp port {BULK_PORT}", name)
    try:
        r = lab.exec(
            "cli",
            "iperf3", "-c", lab.VIP, "-p", str(BULK_PORT), "-t", str(seconds), "-b", "20M", "-J",
            timeout=seconds + 30,
        )  # fmt: skip
    finally:
        pcap = cap.stop()
    return json.loads(r.stdout)["end"], pcap


class HeldClient:
    """keepalive_client.py in the client: one keep-alive connection through the VIP, asked
    for one answer at a time; `ip` and `port` are its local address."""

    def __init__(self, lab: Lab, port: int = 80) -> None:
        cmd = ["ip", "netns", "exec", lab.ns["cli"], sys.executable]
        self.proc = subprocess.Popen(
            [*cmd, str(LAB_DIR / "keepalive_client.py"), lab.VIP, str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.ip, _, self.port = self.proc.stdout.readline().split()[1].partition(":")

    def ask(self) -> str:
        """The next answer line ("answer BACKEND"), or "" once the connection has ended."""
        assert self.proc.stdin and self.proc.stdout
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def __enter__(self) -> HeldClient:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)
