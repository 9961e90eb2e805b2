#!/usr/bin/env python3
"""The pktswitch netns lab: one client, one load-balancer namespace, up to three backends.

    {p}cli  cli0 198.51.100.2/24 (default via .1)
              |  veth
    {p}lb   lbc0 198.51.100.1/24, ip_forward=1
            br0  192.0.2.254/24, ports lba / lbb / lbc
              |  veth (lbX <-> eth0)
    {p}a/b/c  eth0 192.0.2.1 / .2 / .3 /24 (default via 192.0.2.254)
              nginx :80 (body "A\\n" / "B\\n" / "C\\n"), iperf3 -s :5201

No interface is linked to the root namespace: every veth is created inside a lab
namespace with its peer placed in another lab namespace. The VIP (203.0.113.10) and the
SNAT address (203.0.113.1) are configured nowhere; the switch routes them into its TUN
device. Nothing listens in the lb namespace.

Checksum oracle (DESIGN.md, "Measured facts"): tx checksum offload is switched off on
lbc0, br0 and the bridge ports, so the kernel finishes checksums in software as packets
leave the lb namespace; `Lab.capture(..., "tcp")` at a backend (tcpdump -Q in) then sees
exactly what the backend received.

Stdlib only. Needs root, iproute2 with `ip netns`, nginx, iperf3, curl, ethtool, tcpdump.
Usage: python3 netns-lab/labnet.py selftest | list | down PREFIX
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import ClassVar

RUN_ROOT = Path("/run/pktswitch-lab")
ROLES = ("cli", "lb", "a", "b", "c")
BACKEND_ROLES = ("a", "b", "c")
_PREFIX_RE = re.compile(r"pks[a-z0-9]{1,12}-")
_NAME_RE = re.compile(r"pks[a-z0-9]{1,12}-(?:" + "|".join(ROLES) + ")")


class LabCommandError(subprocess.CalledProcessError):
    """A lab command failed; unlike CalledProcessError, str() includes its stderr."""

    def __str__(self) -> str:
        text = super().__str__()
        err = self.stderr if isinstance(self.stderr, str) else ""
        out = self.output if isinstance(self.output, str) else ""
        detail = (err.strip() or out.strip())[-2000:]
        return f"{text}: {detail}" if detail else text


def _run(
    cmd: list[str], *, check: bool, timeout: float, capture: bool
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        capture_output=capture,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise LabCommandError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return proc


def _netns_names() -> list[str]:
    out = _run(["ip", "netns", "list"], check=True, timeout=10, capture=True).stdout
    # lines look like "NAME" or "NAME (id: 3)"
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def lab_names_in_use() -> list[str]:
    """Namespaces that look like a Lab's ("pks" + id + "-" + role); used to check for leaks."""
    return sorted(n for n in _netns_names() if _NAME_RE.fullmatch(n))


def pid_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie (a killed orphan stays a zombie until init
    reaps it, which can take a while)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # "pid (comm) S ...": comm may contain spaces/parens, the state follows the last ")"
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _log_tail(path: Path, limit: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


class Capture:
    """A running `tcpdump -w` in a lab namespace; stop() flushes it and returns the pcap.

    The pcap lives in the lab's run_dir, which Lab.down() deletes: read or copy it first.
    """

    def __init__(self, lab: Lab, proc: subprocess.Popen[bytes], path: Path, log: Path) -> None:
        self._lab = lab
        self._proc = proc
        self.path = path
        self.log = log

    @property
    def pid(self) -> int:
        return self._proc.pid

    def stop(self, timeout: float = 5) -> Path:
        """SIGINT tcpdump, wait (bounded) for it to flush and exit, return the pcap path."""
        self._lab._terminate(self._proc, signal.SIGINT, timeout)
        return self.path

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Lab:
    CLIENT_IP = "198.51.100.2"
    # more client addresses on the same interface, for schedulers that hash the client
    EXTRA_CLIENT_IPS: ClassVar[tuple[str, ...]] = tuple(f"198.51.100.{i}" for i in range(3, 23))
    LB_CLIENT_IP = "198.51.100.1"
    LB_BACKEND_IP = "192.0.2.254"
    VIP = "203.0.113.10"
    SNAT = "203.0.113.1"
    BACKENDS: ClassVar[dict[str, str]] = {"A": "192.0.2.1", "B": "192.0.2.2", "C": "192.0.2.3"}
    NGINX_PORT = 80
    IPERF_PORT = 5201

    def __init__(
        self, prefix: str | None = None, backends: int = 3, checksum_oracle: bool = True
    ) -> None:
        """`checksum_oracle`: turn tx checksum offload off on the switch's ports (see the
        module's docstring), as the tests need; the benchmark keeps the offloads a real
        deployment has, since software checksums and segmentation on the way out cost every
        variant but the forwarding ones most."""
        if prefix is None:
            prefix = "pks" + secrets.token_hex(3)[:5] + "-"
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"prefix must match {_PREFIX_RE.pattern!r}, got {prefix!r}")
        if not 1 <= backends <= len(BACKEND_ROLES):
            raise ValueError(f"backends must be 1..{len(BACKEND_ROLES)}, got {backends}")
        self.prefix = prefix
        self.checksum_oracle = checksum_oracle
        self.backend_roles: tuple[str, ...] = BACKEND_ROLES[:backends]
        self.ns: dict[str, str] = {r: f"{prefix}{r}" for r in ("cli", "lb", *self.backend_roles)}
        self.run_dir = RUN_ROOT / prefix
        # role ("a") -> {"nginx": Popen, "iperf3": Popen}
        self.services: dict[str, dict[str, subprocess.Popen[bytes]]] = {}
        self.up_seconds: float | None = None
        self.down_seconds: float | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}
        self._created_ns: list[str] = []
        self._created_run_dir = False
        self._atexit_registered = False
        self._owner_pid = os.getpid()
        self._log_seq = 0

    # ------------------------------------------------------------------ helpers
    def backend_ip(self, role: str) -> str:
        return self.BACKENDS[role.upper()]

    def _host(self, *cmd: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return _run(list(cmd), check=True, timeout=timeout, capture=True)

    def _ns_of(self, role: str) -> str:
        try:
            return self.ns[role]
        except KeyError:
            raise ValueError(f"unknown role {role!r}; roles: {sorted(self.ns)}") from None

    def exec(
        self,
        role: str,
        *cmd: str,
        check: bool = True,
        timeout: float = 30,
        capture: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run `ip netns exec NS cmd...` to completion (killed after timeout)."""
        return _run(
            ["ip", "netns", "exec", self._ns_of(role), *cmd],
            check=check,
            timeout=timeout,
            capture=capture,
        )

    def spawn(self, role: str, *cmd: str, log: str | None = None) -> subprocess.Popen[bytes]:
        """Start a long-running process in role's namespace; down() will stop it.

        `ip netns exec` execs the command in place, so the returned PID is the command's
        own PID. stdout and stderr go to run_dir/log.
        """
        ns = self._ns_of(role)
        if not self.run_dir.is_dir():
            raise RuntimeError(f"{self.run_dir} does not exist (call up() first)")
        if log is None:
            self._log_seq += 1
            log = f"{role}-{Path(cmd[0]).name}-{self._log_seq}.log"
        log_path = self.run_dir / log
        with open(log_path, "ab") as fh:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *cmd],
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                # own session: a terminal ^C reaches us, and down() stops children in order
                start_new_session=True,
            )
        self._procs.append(proc)
        self._logs[proc.pid] = log_path
        return proc

    def log_path(self, proc: subprocess.Popen[bytes]) -> Path | None:
        return self._logs.get(proc.pid)

    def _terminate(self, proc: subprocess.Popen[bytes], sig: int, timeout: float) -> int:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=5)
        if proc in self._procs:
            self._procs.remove(proc)
        assert proc.returncode is not None
        return proc.returncode

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5) -> int:
        """SIGTERM one spawned process, SIGKILL after `timeout` s; return its exit code."""
        return self._terminate(proc, signal.SIGTERM, timeout)

    def wait_tcp(self, role: str, ip: str, port: int, timeout: float = 10) -> None:
        """Poll connect() to ip:port from inside role's namespace until it succeeds."""
        script = (
            "import socket,sys,time\n"
            "ip,port,end=sys.argv[1],int(sys.argv[2]),time.monotonic()+float(sys.argv[3])\n"
            "while True:\n"
            "    try:\n"
            "        socket.create_connection((ip,port),timeout=0.5).close(); sys.exit(0)\n"
            "    except OSError:\n"
            "        if time.monotonic()>=end: sys.exit(1)\n"
            "        time.sleep(0.02)\n"
        )
        try:
            res = self.exec(
                role,
                sys.executable or "python3",
                "-I",
                "-c",
                script,
                ip,
                str(port),
                str(timeout),
                check=False,
                timeout=timeout + 5,
            )
        except subprocess.TimeoutExpired:
            res = None
        if res is None or res.returncode != 0:
            detail = f" ({res.stderr.strip()[-300:]})" if res is not None and res.stderr else ""
            raise TimeoutError(
                f"{ip}:{port} not accepting TCP from {self.ns[role]} after {timeout}s{detail}"
            )

    def curl(self, url: str, timeout: float = 5, source: str | None = None) -> str:
        """`curl -sS --fail` from the client namespace (from address `source` if given);
        returns the body, raises on failure."""
        bind = ("--interface", source) if source else ()
        res = self.exec(
            "cli",
            "curl",
            "-sS",
            "--fail",
            "--noproxy",
            "*",
            *bind,
            "-m",
            str(timeout),
            url,
            timeout=timeout + 5,
        )
        return res.stdout

    def capture(self, role: str, iface: str, bpf: str, name: str, timeout: float = 5) -> Capture:
        """Start tcpdump (-Q in) on iface in role's namespace; return once it is listening."""
        path = self.run_dir / f"{name}.pcap"
        log = f"{name}.tcpdump.log"
        # -Z root: Debian's tcpdump otherwise drops to user "tcpdump" before opening -w FILE
        cmd = ["tcpdump", "-Q", "in", "-i", iface, "-w", str(path), "-U", "-s", "0", "-n"]
        # --immediate-mode: without it TPACKET_V3 hands packets over per block (or after
        # 1 s), and packets still in the ring when SIGINT arrives are lost.
        # -B 32768 (KiB): with the 2 MiB default, tcpdump dropped 25-40 % of a 50-200 Mbit/s
        # iperf3 stream here; with 32 MiB it dropped none.
        cmd += ["-Z", "root", "--immediate-mode", "-B", "32768"]
        if bpf:
            cmd.append(bpf)
        proc = self.spawn(role, *cmd, log=log)
        log_path = self.run_dir / log
        deadline = time.monotonic() + timeout
        while "listening on" not in _log_tail(log_path, 100_000):
            if proc.poll() is not None:
                self._terminate(proc, signal.SIGTERM, 1)
                raise RuntimeError(f"tcpdump on {role}/{iface} exited: {_log_tail(log_path)}")
            if time.monotonic() >= deadline:
                self._terminate(proc, signal.SIGINT, 2)
                raise TimeoutError(f"tcpdump on {role}/{iface} not listening after {timeout}s")
            time.sleep(0.02)
        return Capture(self, proc, path, log_path)

    # ------------------------------------------------------------------ up / down
    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def _atexit_down(self) -> None:
        if os.getpid() == self._owner_pid:  # not in a forked child that inherited atexit
            self.down()

    def up(self) -> None:
        """Build namespaces, links, addresses, backend services; wait until they answer."""
        t0 = time.monotonic()
        if not self._atexit_registered:
            atexit.register(self._atexit_down)
            self._atexit_registered = True
        try:
            self._up()
        except BaseException as exc:
            try:
                self.down()
            except Exception as cleanup_exc:
                exc.add_note(f"Lab.down() after failed up() also failed: {cleanup_exc}")
            raise
        self.up_seconds = time.monotonic() - t0

    def _up(self) -> None:
        existing = set(_netns_names())
        clash = sorted(existing & set(self.ns.values()))
        if clash:
            raise RuntimeError(f"namespaces already exist (not ours, left alone): {clash}")
        if self.run_dir.exists():
            raise RuntimeError(f"{self.run_dir} already exists (stale lab? see `labnet.py down`)")
        for attempt in range(3):  # a concurrent down() may rmdir RUN_ROOT in between
            try:
                RUN_ROOT.mkdir(mode=0o755, exist_ok=True)
                self.run_dir.mkdir(mode=0o755)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        self._created_run_dir = True

        for role in self.ns:
            self._add_ns(role)

        cli, lb = self.ns["cli"], self.ns["lb"]
        # br0 first, so lbc0 does not get ifindex 2 like its peer cli0: a veth whose
        # ifindex equals its peer's (iflink) gets only "non-urgent" link-watch events, and
        # lbc0 then stayed operstate DOWN (NO-CARRIER) for ~1 s after up() returned.
        self._ip(lb, "link add br0 type bridge")
        self._ip(lb, f"addr add {self.LB_BACKEND_IP}/24 dev br0")
        self._ip(lb, "link set br0 up")
        self.exec("lb", "sysctl", "-qw", "net.ipv4.ip_forward=1", timeout=10)
        # bridged frames need not traverse netfilter (the key exists only with br_netfilter)
        self.exec(
            "lb", "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", check=False, timeout=10
        )

        # client <-> lb: created inside cli, peer placed straight into lb
        self._ip(cli, f"link add cli0 type veth peer name lbc0 netns {lb}")
        self._ip(cli, f"addr add {self.CLIENT_IP}/24 dev cli0")
        for ip in self.EXTRA_CLIENT_IPS:
            self._ip(cli, f"addr add {ip}/24 dev cli0")
        self._ip(cli, "link set cli0 up")
        self._ip(cli, f"route add default via {self.LB_CLIENT_IP}")
        self._ip(lb, f"addr add {self.LB_CLIENT_IP}/24 dev lbc0")
        self._ip(lb, "link set lbc0 up")

        for role in self.backend_roles:
            ns, port, ip = self.ns[role], f"lb{role}", self.backend_ip(role)
            self._ip(ns, f"link add eth0 type veth peer name {port} netns {lb}")
            self._ip(lb, f"link set {port} master br0")
            self._ip(lb, f"link set {port} up")
            self._ip(ns, f"addr add {ip}/24 dev eth0")
            self._ip(ns, "link set eth0 up")
            self._ip(ns, f"route add default via {self.LB_BACKEND_IP}")

        if self.checksum_oracle:
            self._checksums_in_software(lb)
        self._wait_links_up()

        for role in self.backend_roles:
            self._start_backend(role)
        self._wait_backends()

    def _checksums_in_software(self, lb: str) -> None:
        """The checksum oracle: the kernel finishes checksums in software on the way out of lb."""
        for dev in ("lbc0", *(f"lb{r}" for r in self.backend_roles)):
            self.exec("lb", "ethtool", "-K", dev, "tx", "off", timeout=10)
        res = self.exec("lb", "ethtool", "-K", "br0", "tx", "off", check=False, timeout=10)
        if res.returncode != 0:
            warnings.warn(
                f"ethtool -K br0 tx off failed in {lb}: {res.stderr.strip()}",
                RuntimeWarning,
                stacklevel=4,
            )

    def _ip(self, ns: str, args: str) -> None:
        """`ip -n NS ARGS...`; ARGS is split on whitespace (no token here has spaces)."""
        self._host("ip", "-n", ns, *args.split())

    def _wait_links_up(self, timeout: float = 3) -> None:
        """Wait (bounded) until every veth/bridge of the lab reports operstate UP."""
        deadline = time.monotonic() + timeout
        while True:
            down = []
            for ns in self.ns.values():
                out = _run(["ip", "-n", ns, "-br", "link"], check=True, timeout=10, capture=True)
                down += [
                    f"{ns}/{f[0]}:{f[1]}"
                    for f in (line.split() for line in out.stdout.splitlines())
                    if len(f) > 1 and f[0] != "lo" and f[1] != "UP"
                ]
            if not down:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"links not up after {timeout}s: {down}")
            time.sleep(0.05)

    def _add_ns(self, role: str) -> None:
        ns = self.ns[role]
        self._host("ip", "netns", "add", ns)
        self._created_ns.append(ns)
        self._host("ip", "-n", ns, "link", "set", "lo", "up")
        self.exec(
            role,
            "sysctl",
            "-qw",
            "net.core.somaxconn=8192",
            "net.ipv4.tcp_max_syn_backlog=8192",
            "net.ipv4.ip_local_port_range=1024 65000",
            "net.ipv4.tcp_tw_reuse=1",
            timeout=10,
        )

    def _nginx_conf(self, role: str) -> str:
        rd, name = self.run_dir, role.upper()
        tmp = rd / f"nginx-{role}-tmp"
        # master runs as root; the worker needs an existing user *and* group (Debian has
        # no group "nobody", nginx's compiled-in default)
        user = pwd.getpwnam("nobody")
        group = grp.getgrgid(user.pw_gid).gr_name
        temps = "\n".join(
            f"  {kind}_temp_path {tmp}/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return f"""\
user {user.pw_name} {group};
worker_processes 1;
daemon off;
master_process on;
pid {rd}/nginx-{role}.pid;
error_log {rd}/nginx-{role}.err warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
{temps}
  server {{
    listen {self.NGINX_PORT} backlog=8192;
    default_type text/plain;
    location / {{ return 200 "{name}\\n"; }}
  }}
}}
"""

    def stop_http(self, role: str) -> None:
        """Stop a backend's web server (a failed backend); start_http brings it back."""
        self.stop(self.services[role]["nginx"])

    def start_http(self, role: str, timeout: float = 10) -> None:
        self.services[role]["nginx"] = self._start_nginx(role)
        self.wait_tcp("cli", self.backend_ip(role), self.NGINX_PORT, timeout=timeout)

    def _start_nginx(self, role: str) -> subprocess.Popen[bytes]:
        rd = self.run_dir
        (rd / f"nginx-{role}-tmp").mkdir(mode=0o755, exist_ok=True)
        conf = rd / f"nginx-{role}.conf"
        conf.write_text(self._nginx_conf(role))
        # -e: nginx opens its default error log before reading the config; keep it in run_dir
        return self.spawn(
            role,
            "nginx",
            "-p",
            f"{rd}/",
            "-e",
            f"{rd}/nginx-{role}.err",
            "-c",
            str(conf),
            log=f"nginx-{role}.log",
        )

    def _start_backend(self, role: str) -> None:
        nginx = self._start_nginx(role)
        iperf = self.spawn(
            role,
            "iperf3",
            "-s",
            "-p",
            str(self.IPERF_PORT),
            "--forceflush",
            log=f"iperf3-{role}.log",
        )
        self.services[role] = {"nginx": nginx, "iperf3": iperf}

    def _check_services_alive(self) -> None:
        for role, procs in self.services.items():
            for name, proc in procs.items():
                if proc.poll() is not None:
                    log = self._logs.get(proc.pid)
                    extra = _log_tail(log) if log else ""
                    if name == "nginx":
                        extra += _log_tail(self.run_dir / f"nginx-{role}.err")
                    raise RuntimeError(
                        f"{name} in {self.ns[role]} exited with {proc.returncode}: {extra}"
                    )

    def _wait_backends(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        for role in self.backend_roles:
            ip = self.backend_ip(role)
            for port in (self.NGINX_PORT, self.IPERF_PORT):
                while True:  # short probes, so a service that died is reported at once
                    self._check_services_alive()
                    left = deadline - time.monotonic()
                    try:
                        self.wait_tcp("cli", ip, port, timeout=max(0.1, min(1.0, left)))
                        break
                    except TimeoutError:
                        if time.monotonic() >= deadline:
                            self._check_services_alive()
                            raise
        self._check_services_alive()
        for role in self.backend_roles:
            body = self.curl(f"http://{self.backend_ip(role)}/")
            if body != f"{role.upper()}\n":
                raise RuntimeError(f"backend {role}: unexpected body {body!r}")

    def down(self) -> None:
        """Stop every process this Lab started, delete its namespaces, remove run_dir.

        Idempotent. Every step runs even if an earlier one fails; failures are raised
        together at the end.
        """
        t0 = time.monotonic()
        had_work = bool(self._procs or self._created_ns or self._created_run_dir)
        errors: list[str] = []
        for proc in reversed(list(self._procs)):
            try:
                self._terminate(proc, signal.SIGTERM, 5)
            except Exception as exc:
                errors.append(f"stopping pid {proc.pid}: {exc}")
        self.services.clear()

        existing: set[str] = set()
        if self._created_ns:
            try:
                existing = set(_netns_names())
            except Exception as exc:
                errors.append(f"ip netns list: {exc}")
                existing = set(self._created_ns)
        for ns in reversed(self._created_ns):
            if ns not in existing:
                continue
            try:
                self._kill_leftovers(ns)
            except Exception as exc:
                errors.append(f"leftover processes in {ns}: {exc}")
            try:
                self._host("ip", "netns", "del", ns)
            except Exception as exc:
                errors.append(f"ip netns del {ns}: {exc}")
        self._created_ns.clear()

        if self._created_run_dir:
            try:
                shutil.rmtree(self.run_dir, ignore_errors=False)
            except FileNotFoundError:
                pass
            except Exception as exc:
                errors.append(f"rm -r {self.run_dir}: {exc}")
            with contextlib.suppress(OSError):
                RUN_ROOT.rmdir()  # only if empty (other labs may be running)
            self._created_run_dir = False

        if self._atexit_registered:
            atexit.unregister(self._atexit_down)
            self._atexit_registered = False
        if had_work:
            self.down_seconds = time.monotonic() - t0
        if errors:
            raise RuntimeError("Lab.down() incomplete: " + "; ".join(errors))

    @staticmethod
    def _kill_leftovers(ns: str, timeout: float = 1) -> None:
        """Kill, by PID, processes still inside one of our namespaces (e.g. nginx workers
        whose master was SIGKILLed, or children of spawned commands)."""
        out = _run(["ip", "netns", "pids", ns], check=False, timeout=10, capture=True).stdout
        pids = [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]
        if not pids:
            return
        warnings.warn(f"killing leftover pids in {ns}: {pids}", RuntimeWarning, stacklevel=2)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                pids = [p for p in pids if pid_alive(p)]
                if not pids:
                    return
                time.sleep(0.05)


# ---------------------------------------------------------------------- CLI
def _down_prefix(prefix: str) -> None:
    """Tear down a lab left behind by a crashed run (namespaces by exact name, run_dir)."""
    if not _PREFIX_RE.fullmatch(prefix):
        raise SystemExit(f"not a lab prefix: {prefix!r} (expected like 'pks1a2b3-')")
    lab = Lab(prefix)
    existing = set(_netns_names())
    lab._created_ns = [n for n in lab.ns.values() if n in existing]
    lab._created_run_dir = lab.run_dir.exists()
    removed = list(lab._created_ns)
    lab.down()
    print(f"{prefix}: removed namespaces {removed}, run_dir {lab.run_dir}")


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else ""
    if cmd == "selftest":
        # turn SIGTERM into an exception so the with-block tears the lab down
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        with Lab() as lab:
            print(f"lab {lab.prefix} up in {lab.up_seconds:.2f}s: {lab.ns}")
            for role in lab.backend_roles:
                ip = lab.backend_ip(role)
                print(f"  curl http://{ip}/ from {lab.ns['cli']} -> {lab.curl(f'http://{ip}/')!r}")
        print(f"lab {lab.prefix} down in {lab.down_seconds:.2f}s; left: {lab_names_in_use()}")
        return 0
    if cmd == "list":
        for name in lab_names_in_use():
            print(name)
        return 0
    if cmd == "down" and len(argv) == 2:
        _down_prefix(argv[1])
        return 0
    print("usage: labnet.py selftest | list | down PREFIX", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
