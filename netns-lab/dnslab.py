"""DNS in the lab: dnsmasq on a backend, answering who.lab TXT with the backend's name, and
dig in the client to ask through a VIP."""

from __future__ import annotations

import subprocess
import time

from labnet import Lab

DNS_PORT = 53
NAME = "who.lab"  # TXT: the name of the backend that answered ("A", "B", "C")


def start_dns(lab: Lab, role: str, timeout: float = 10) -> subprocess.Popen[bytes]:
    """dnsmasq in the foreground on the backend's address, port 53 (UDP and TCP), logging each
    query; returns once it answers a query from its own namespace. Stop it with lab.stop."""
    ip = lab.backend_ip(role)
    proc = lab.spawn(
        role,
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        "--bind-interfaces", f"--listen-address={ip}", f"--port={DNS_PORT}", "--pid-file=",
        "--user=root", f"--txt-record={NAME},{role.upper()}", "--log-facility=-",
        "--log-queries",
        log=f"dnsmasq-{role}.log",
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while dig(lab, ip, role=role, tries=1, wait=1) != [role.upper()]:
        if proc.poll() is not None:
            raise RuntimeError(f"dnsmasq in {lab.ns[role]} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            lab.stop(proc)
            raise TimeoutError(f"dnsmasq in {lab.ns[role]} not answering after {timeout} s")
    return proc


def dig(
    lab: Lab,
    server: str,
    role: str = "cli",
    tries: int = 3,
    wait: int = 2,
    port: int = DNS_PORT,
    tcp: bool = False,
    source: str = "",
) -> list[str]:
    """`dig +short who.lab TXT` at server from role's namespace (a new socket, so a new
    source port, each call, unless `source` "IP#PORT" names one): the answers, quotes
    removed; [] when none came."""
    cmd = ["dig", "+short", f"+tries={tries}", f"+time={wait}", f"-p{port}", f"@{server}"]
    cmd += ["-b", source] if source else []
    cmd += [NAME, "TXT", "+tcp" if tcp else "+notcp"]
    res = lab.exec(role, *cmd, check=False, timeout=tries * wait + 10)
    return [line.strip('"') for line in res.stdout.split()]
