"""The TUN device and the routes that steer the switch's traffic into it.

The kernel routes every packet for a VIP (and, in full NAT, for an SNAT address) into the TUN
device; pktswitch reads it, rewrites it and writes it back into the same device, and the kernel
forwards the result like any routed packet (needs net.ipv4.ip_forward=1). No address is put on
the device, and VIP and SNAT addresses must not be local addresses of this host: a local socket
that shares a 4-tuple with a forwarded flow makes the kernel drop that flow's packets.

In nat mode the backends reply to the client address itself, so their replies are caught by
policy routing: a rule per backend (from its address, its protocol, from its port) looks up a
table whose default route points into the TUN device. Everything added is recorded and removed
on close, in reverse order.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import subprocess
from collections.abc import Iterable, Sequence

from pytun_pmd3 import TunTapDevice
from pytun_pmd3.linux import IFF_NO_PI, IFF_TUN, IFF_VNET_HDR

log = logging.getLogger(__name__)

RULE_PRIORITY = 4242  # before the main table (32766); one priority for all our rules
SETUP_TIMEOUT = 10  # seconds an `ip` or `tc` command may take

# include/uapi/linux/if_tun.h
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04
SYSFS_NET = "/sys/class/net"
ONLINE_CPUS = "/sys/devices/system/cpu/online"


class SetupError(Exception):
    """The host refused part of the datapath set-up (a route, a rule, the device)."""


def _exec(*cmd: str) -> subprocess.CompletedProcess[str]:
    """An iproute2 command, run to its end. SetupError if it hangs or is missing."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=SETUP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SetupError(f"{' '.join(cmd)}: {e}") from e


def _run(*cmd: str) -> str:
    """An iproute2 command; its output. SetupError if it fails, hangs or is missing."""
    r = _exec(*cmd)
    if r.returncode != 0:
        raise SetupError(f"{' '.join(cmd)}: {r.stderr.strip() or f'exit {r.returncode}'}")
    return r.stdout


def _ip(*args: str) -> None:
    _run("ip", *args)


def _tc(*args: str) -> str:
    return _run("tc", *args)


def route_device(route_get: str) -> str | None:
    """The device of `ip route get ADDR`'s answer ("192.0.2.1 dev veth1 src 192.0.2.254 uid 0
    / cache"), None for a local address (dev lo) or none named."""
    words = route_get.split()
    if not words or words[0] in ("local", "broadcast", "unreachable", "prohibit", "blackhole"):
        return None
    if "dev" not in words[:-1]:
        return None
    dev = words[words.index("dev") + 1]
    return None if dev == "lo" else dev


def root_qdisc(tc_show: str) -> str:
    """The kind of a device's root qdisc from `tc qdisc show dev DEV`'s lines
    ("qdisc noqueue 0: root refcnt 2")."""
    for line in tc_show.splitlines():
        words = line.split()
        if len(words) > 1 and words[0] == "qdisc" and "root" in words:
            return words[1]
    return ""


def _read_sysctl(name: str) -> str:
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return "?"


def _remove_stale_rules(spec: tuple[str, ...]) -> None:
    """Delete rules identical to `spec` left by a switch that was killed (SIGKILL leaves
    its rules behind: they outlive the device). Identical means ours: same backend endpoint,
    table and priority."""
    for _ in range(100):  # bounded: each round removes one copy
        if _exec("ip", "rule", "del", *spec).returncode != 0:  # no (more) such rule
            return
        log.warning("removed a stale rule: %s", " ".join(spec))


def cpu_mask(cpus: Iterable[int]) -> str:
    """A CPU set as sysfs writes it: hex in comma-separated 32-bit groups, highest first."""
    bits = sum(1 << cpu for cpu in set(cpus))
    groups = [
        f"{bits >> shift & 0xFFFFFFFF:08x}" for shift in range(0, max(bits.bit_length(), 1), 32)
    ]
    return ",".join(reversed(groups))


def mask_cpus(mask: str) -> tuple[int, ...]:
    """The CPUs of a mask as sysfs shows it."""
    bits = int(mask.strip().replace(",", "") or "0", 16)
    return tuple(cpu for cpu in range(bits.bit_length()) if bits >> cpu & 1)


def cpu_list(text: str) -> tuple[int, ...]:
    """A CPU list as sysfs shows it ("0-3,6")."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            cpus.extend(range(int(lo), int(hi or lo) + 1))
    return tuple(cpus)


def rps_targets(setting: str | tuple[int, ...], online: str = ONLINE_CPUS) -> tuple[int, ...]:
    """The CPUs a config's rps_cpus names: "all" is the online ones, and none on a one-CPU
    host (queueing a packet to the CPU that writes it only adds a step)."""
    if setting == "off":
        return ()
    if setting == "all":
        try:
            with open(online) as f:
                cpus = cpu_list(f.read())
        except (OSError, ValueError):  # no sysfs here: the CPUs Python counts
            cpus = tuple(range(os.cpu_count() or 1))
        return cpus if len(cpus) > 1 else ()
    if isinstance(setting, str):
        raise ValueError(f"rps_cpus: {setting!r} is neither off, all nor a list of CPUs")
    return setting


class TunDevice:
    """A TUN device (IFF_TUN | IFF_NO_PI: raw IP packets) with its routes and rules.

    With `offload`, it is opened with IFF_VNET_HDR and TUNSETOFFLOAD(CSUM | TSO4 | TSO6): each
    packet then comes with a virtio_net_hdr, may be a GSO super-packet of up to 64 KB and may
    carry a partial checksum; one read moves up to 64 KB instead of 1500 bytes. Where the
    kernel refuses, the device is opened again without it, and `vnet` says which one it is.
    """

    def __init__(self, name: str, offload: bool = True) -> None:
        self.vnet = False
        self.offload_error = ""
        if offload:
            try:
                self._dev = TunTapDevice(name, flags=IFF_TUN | IFF_NO_PI | IFF_VNET_HDR)
                fcntl.ioctl(self._dev.fileno(), TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
                self.vnet = True
            except OSError as e:
                self.offload_error = str(e)
                log.warning("TUN offloads refused (%s): one packet per read from now on", e)
                if hasattr(self, "_dev"):
                    self._dev.close()
        if not self.vnet:
            try:
                self._dev = TunTapDevice(name, flags=IFF_TUN | IFF_NO_PI)
            except OSError as e:
                raise SetupError(f"cannot create TUN device {name!r}: {e}") from e
        self.name = self._dev.name
        self.fd = self._dev.fileno()
        os.set_blocking(self.fd, False)
        self.qdisc = ""  # the root qdisc once up (noqueue unless refused)
        self.rps_cpus: tuple[int, ...] = ()  # where the kernel takes written packets on (RPS)
        self._undo: list[tuple[str, ...]] = []
        if _read_sysctl("net.ipv4.ip_forward") != "1":
            log.warning(
                "net.ipv4.ip_forward is not 1 in this namespace: the kernel will not forward "
                "what the switch writes"
            )

    def up(self) -> None:
        """Bring the device up, without a qdisc in front of its queue (see no_qdisc)."""
        _ip("link", "set", "dev", self.name, "up")
        self.qdisc = self.no_qdisc()

    def no_qdisc(self) -> str:
        """Replace the device's root qdisc with noqueue; returns the root qdisc as the kernel
        then shows it ("unknown" if `tc` cannot say), with a warning if it is not noqueue.

        The kernel hands packets to the reader through the device's own ring (tx_queue_len
        of them) and drops what does not fit: a TUN device never stops its queue, so a qdisc
        in front of it (the host's default, net.core.default_qdisc: pfifo_fast, or fq_codel
        on many distributions) never holds a packet back and only adds its enqueue, dequeue
        and lock to each packet the switch reads. Not undone at close: the device the
        switch made goes with it (a persistent one keeps noqueue, as it keeps RPS)."""
        try:
            _tc("qdisc", "replace", "dev", self.name, "root", "noqueue")
        except SetupError as e:
            log.warning("the qdisc of %s stays (%s): each packet pays for it", self.name, e)
        try:
            kind = root_qdisc(_tc("qdisc", "show", "dev", self.name)) or "unknown"
        except SetupError as e:
            log.warning("cannot read the qdisc of %s: %s", self.name, e)
            return "unknown"
        if kind != "noqueue":
            log.warning("the qdisc of %s is %s, not noqueue", self.name, kind)
        return kind

    def route(self, prefixes: Sequence[str]) -> None:
        """Route each address (a /32) into the device; one already routed is left as it is
        (a reload passes every VIP again)."""
        for p in prefixes:
            undo = ("route", "del", f"{p}/32", "dev", self.name)
            if undo in self._undo:
                continue
            _ip("route", "replace", f"{p}/32", "dev", self.name)
            self._undo.append(undo)

    def steer_replies(self, table: int, endpoints: Sequence[tuple[str, int, str]]) -> None:
        """nat mode: send TCP or UDP (the endpoint's protocol) from each backend endpoint
        (address, port, protocol), and ICMP from each backend address,
        into the device via `table`, when it comes in where the host routes to that backend
        (`iif`: a packet from the client side forged with a backend's address is routed as
        any other, never taken for its reply); what was added before is left as it is."""
        came = {ip: self._backend_side(ip) for ip, _, _ in endpoints}
        replies = [
            ("from", f"{ip}/32", *came[ip], "ipproto", proto, "sport", str(port))
            for ip, port, proto in endpoints
        ]
        # and ICMP errors from the backends, which the switch translates for the client
        errors = [("from", f"{ip}/32", *came[ip], "ipproto", "icmp") for ip in set(came)]
        self._steer(table, sorted(set(replies)) + sorted(errors))

    def steer_snat(self, table: int, snat: Sequence[str], backends: Sequence[str]) -> None:
        """full NAT: send what is addressed to an SNAT address into the device via `table`
        only when it comes in where the host routes to a backend (`iif`): the backends'
        answers, and ICMP errors about what the switch sent them. The same address from the
        client side (an error forged about a backend-bound packet) is routed as any other,
        never into the switch. What was added before is left as it is."""
        sides = sorted({self._backend_side(ip) for ip in backends})
        self._steer(table, [("to", f"{a}/32", *side) for a in snat for side in sides])

    def _steer(self, table: int, matches: Sequence[tuple[str, ...]]) -> None:
        """A rule for each match into `table`, whose default route points into the device."""
        undo = ("route", "del", "default", "dev", self.name, "table", str(table))
        if undo not in self._undo:
            _ip("route", "replace", "default", "dev", self.name, "table", str(table))
            self._undo.append(undo)
        for match in matches:
            spec = (*match, "lookup", str(table), "priority", str(RULE_PRIORITY))
            if ("rule", "del", *spec) in self._undo:
                continue  # added before (a reload passes every backend again)
            _remove_stale_rules(spec)
            _ip("rule", "add", *spec)
            self._undo.append(("rule", "del", *spec))

    @staticmethod
    def _backend_side(ip: str) -> tuple[str, ...]:
        """("iif", DEVICE): the device the host routes to backend `ip` through, which its
        replies come in by; () when the route says none (a local or unreachable address)."""
        dev = route_device(_run("ip", "route", "get", ip))
        if dev is None:
            log.warning("no device routes to backend %s: its replies are taken from any side", ip)
            return ()
        return ("iif", dev)

    def spread_receive(self, cpus: Sequence[int], sysfs: str = SYSFS_NET) -> tuple[int, ...]:
        """RPS on the device: the kernel's work on each packet the switch writes (routing it on,
        and the receiver's TCP input when the receiver is on this host) is queued to one of
        `cpus`, chosen by the flow's hash, instead of running inside the switch's write(),
        which leaves the switch's CPU to the switch. Returns the CPUs as the kernel reads them
        back, with a warning for any it dropped; () with a warning where it refuses.

        sysfs shows the devices of the namespace it was mounted in, which need not be this one
        (`ip netns exec` mounts the namespace's own; nsenter does not), and a device there may
        have the same name and index. So the device is marked first through netlink, which
        acts in this namespace (its alias, `pktswitch pid N <random>`), and sysfs is written
        only if it shows that mark. No CPUs: nothing is touched (a new device has RPS off)."""
        if not cpus:
            return ()
        dev = os.path.join(sysfs, self.name)
        path = os.path.join(dev, "queues", "rx-0", "rps_cpus")
        mark = f"pktswitch pid {os.getpid()} {secrets.token_hex(4)}"
        try:
            _ip("link", "set", "dev", self.name, "alias", mark)
            with open(os.path.join(dev, "ifalias")) as f:
                if f.read().strip() != mark:
                    raise OSError(f"{dev} is another namespace's device")
            with open(path, "w") as f:
                f.write(cpu_mask(cpus))
            with open(path) as f:
                got = mask_cpus(f.read())
        except (OSError, ValueError, SetupError) as e:
            log.warning(
                "RPS not set on %s (%s): the switch's CPU does the kernel's work", self.name, e
            )
            return ()
        if dropped := sorted(set(cpus) - set(got)):
            log.warning("switch.rps_cpus: the kernel left out CPUs %s (not online?)", dropped)
        self.rps_cpus = got
        return got

    def write(self, packet: bytes) -> None:
        """Write one packet of the switch's own (an RST) into the device; the kernel routes it."""
        try:
            os.write(self.fd, packet)
        except OSError as e:
            log.warning("could not write a %d-byte packet: %s", len(packet), e)

    def close(self) -> None:
        """Remove every route and rule added, then the device itself (idempotent)."""
        while self._undo:
            args = self._undo.pop()
            try:
                _ip(*args)
            except SetupError as e:
                log.warning("cleanup: %s", e)
        if self.fd >= 0:
            self._dev.close()  # a non-persistent TUN device disappears with its last fd
            self.fd = -1
