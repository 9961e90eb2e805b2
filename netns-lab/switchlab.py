"""Running pktswitch inside a Lab: its config, its process, and the checks around them.

Used by the demo and by the netns tests, so both run the switch the same way.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from labnet import Lab

from pktswitch.control.client import NotRunning, call
from pktswitch.core import packet

VENV_BIN = Path(sys.executable).parent
PKTSWITCH = str(VENV_BIN / "pktswitch")

WEB_PORT = 80
BULK_PORT = 5201  # iperf3: its control and data connections must reach one backend
# iphash and maglev hash clients with it: fixed, so that every run hashes the lab's clients to
# the same backends (a switch left without one draws a random secret at each start)
LAB_SECRET = "the netns lab's hash secret"


def config_text(
    lab: Lab,
    mode: str = "fullnat",
    timeouts: dict[str, float] | None = None,
    snat_ports: tuple[int, int] | None = None,
    web_backends: Iterable[str] = ("A", "B", "C"),
    scheduler: str = "rr",
    weights: dict[str, int] | None = None,
    options: dict[str, object] | None = None,
    extra: Iterable[str] = (),
    offload: bool = True,
    snat: str | None = None,
    health: dict[str, object] | None = None,
    switch_keys: dict[str, object] | None = None,
    hash_secret: str | None = LAB_SECRET,
    per_client: dict[str, object] | None = None,
) -> str:
    """A config for the lab: service "web" on VIP:80 over the backends (round robin unless
    `scheduler` says otherwise, with `weights` and scheduler `options`), and service "bulk"
    on VIP:5201 with backend A only (iperf3 needs one backend per client). `extra` adds
    whole [[service]] blocks (see service_text); `switch_keys` more [switch] keys;
    `per_client` web's [service.per_client] limits."""
    lines = [
        "[switch]",
        f'tun = "{lab.prefix.rstrip("-")[:12]}t0"',
        f'mode = "{mode}"',
    ]
    if mode == "fullnat":
        lines.append(f'snat = ["{snat or lab.SNAT}"]')
    lines.append(f'control = "{lab.run_dir / "pktswitch.sock"}"')
    if hash_secret is not None:  # (None: for a tree from before the key, bench --baseline)
        lines.append(f'hash_secret = "{hash_secret}"')
    if not offload:
        lines.append("offload = false")
    if snat_ports:
        lines.append(f"snat_ports = [{snat_ports[0]}, {snat_ports[1]}]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in (switch_keys or {}).items()]
    if timeouts:
        lines += ["", "[timeouts]", *(f"{k} = {v}" for k, v in timeouts.items())]
    web = {b: (weights or {}).get(b, 1) for b in web_backends}
    lines.append(service_text(lab, "web", WEB_PORT, scheduler, web, options, health, per_client))
    lines.append(service_text(lab, "bulk", BULK_PORT, "rr", {"A": 1}))
    lines += list(extra)
    return "\n".join(lines) + "\n"


def service_text(
    lab: Lab,
    name: str,
    port: int,
    scheduler: str,
    backends: dict[str, int],
    options: dict[str, object] | None = None,
    health: dict[str, object] | None = None,
    per_client: dict[str, object] | None = None,
    protocol: str = "tcp",
) -> str:
    """One [[service]] on VIP:port over backends {name: weight}, each on the same port, with
    scheduler options, and [service.health] and [service.per_client] tables if given."""
    lines = ["", "[[service]]", f'name = "{name}"', f'vip = "{lab.VIP}:{port}"']
    lines += [f'protocol = "{protocol}"', f'scheduler = "{scheduler}"']
    for k, v in (options or {}).items():
        lines.append(f"{k} = {json.dumps(v)}")
    for table, keys in (("health", health), ("per_client", per_client)):
        if keys is not None:
            lines += [
                "",
                f"[service.{table}]",
                *(f"{k} = {json.dumps(v)}" for k, v in keys.items()),
            ]
    for b, weight in backends.items():
        lines += ["", "[[service.backend]]", f'name = "{b}"']
        lines += [f'address = "{lab.BACKENDS[b]}:{port}"', f"weight = {weight}"]
    return "\n".join(lines)


class Switch:
    """`pktswitch run` in the lab's lb namespace; a context manager that stops it with SIGINT
    and checks that it removed its TUN device, routes and rules."""

    def __init__(self, lab: Lab, config: str, exe: str = PKTSWITCH) -> None:
        self.lab = lab
        self.exe = exe  # the `pktswitch` to run (bench.py --baseline: another tree's)
        self.config_path = lab.run_dir / "pktswitch.toml"
        self.config_path.write_text(config)
        self.socket = str(lab.run_dir / "pktswitch.sock")
        self.tun = ""
        for line in config.splitlines():
            if line.startswith("tun = "):
                self.tun = line.split('"')[1]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10) -> None:
        self.proc = self.lab.spawn(
            "lb", self.exe, "run", "-c", str(self.config_path), log="pktswitch.log"
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pktswitch exited with {self.proc.returncode}: {self.log()}")
            try:
                call(self.socket, "ping", timeout=1)
                return
            except NotRunning:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"pktswitch did not answer on {self.socket}: {self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        path = self.lab.log_path(self.proc) if self.proc else None
        return path.read_text()[-2000:] if path and path.exists() else ""

    def command(self, *args: str) -> list[str]:
        """The argv of a `pktswitch` inspection command against this switch."""
        return [PKTSWITCH, *args, "-s", self.socket]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a `pktswitch` inspection command against this switch (from outside the lab:
        the control socket is a file, reachable from any namespace)."""
        return subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            timeout=15,
            check=check,
        )

    def flows(self, **filters: Any) -> list[dict[str, Any]]:
        """The flow table, asked in-process (the CLI's own client, without its start-up)."""
        return call(self.socket, "flows", **filters)  # type: ignore[no-any-return]

    def cli_json(self, *args: str) -> Any:
        """A `pktswitch ... --json` command's output, parsed."""
        return json.loads(self.cli(*args, "--json").stdout)

    def stats_backends(self) -> list[dict[str, Any]]:
        return call(self.socket, "backends")  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        return call(self.socket, "stats")  # type: ignore[no-any-return]

    def stop(self) -> int:
        """SIGINT, as Ctrl-C; returns the exit code. A switch that answers is held first to
        C having opened its flows: it handed Python only what it hands by design, and no
        packet raised in the loop."""
        assert self.proc is not None
        if self.proc.poll() is None:
            try:
                s = self.stats()
            except (OSError, NotRunning):
                s = None  # not answering: the test's own checks say why
            if s is not None:
                handed = {k: n for k, n in s.get("to_python", {}).items() if n}
                assert set(handed) <= packet.BY_DESIGN, f"C handed Python {handed}"
                assert s.get("internal_errors", 0) == 0, f"{s['internal_errors']} packets raised"
        self.proc.send_signal(2)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            rc = self.lab.stop(self.proc)
        return rc

    def leftovers(self) -> list[str]:
        """What of the switch is still on the host: its device, routes, rules."""
        left = []
        link = self.lab.exec("lb", "ip", "link", "show", "dev", self.tun, check=False)
        if link.returncode == 0:
            left.append(f"device {self.tun}")
        routes = self.lab.exec("lb", "ip", "route", "show", "table", "all", check=False).stdout
        left += [f"route {r}" for r in routes.splitlines() if "203.0.113." in r]
        rules = self.lab.exec("lb", "ip", "rule", "show", check=False).stdout
        left += [f"rule {r}" for r in rules.splitlines() if "192.0.2." in r]
        if Path(self.socket).exists():
            left.append(f"socket {self.socket}")
        return left

    def __enter__(self) -> Switch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
