"""The TUN device's set-up: RPS (the CPU masks written to sysfs, and where nothing may be
written) and its qdisc."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

from pktswitch.io import tun
from pktswitch.io.tun import (
    SetupError,
    TunDevice,
    cpu_list,
    cpu_mask,
    mask_cpus,
    root_qdisc,
    rps_targets,
)


@pytest.mark.parametrize(
    ("cpus", "mask"),
    [
        ((), "00000000"),
        ((0,), "00000001"),
        ((0, 1), "00000003"),
        ((1, 0, 1), "00000003"),
        ((31,), "80000000"),
        ((32,), "00000001,00000000"),
        ((0, 33, 70), "00000040,00000002,00000001"),
    ],
)
def test_cpu_mask_is_sysfs_hex_in_32_bit_groups(cpus: tuple[int, ...], mask: str) -> None:
    assert cpu_mask(cpus) == mask
    assert mask_cpus(mask) == tuple(sorted(set(cpus)))


def test_masks_as_the_kernel_shows_them() -> None:
    assert mask_cpus("3\n") == (0, 1)
    assert mask_cpus("0\n") == ()
    assert mask_cpus("00000000,00000000,00000004\n") == (2,)


def test_cpu_lists_as_sysfs_shows_them() -> None:
    assert cpu_list("0-1\n") == (0, 1)
    assert cpu_list("0,2-4,7\n") == (0, 2, 3, 4, 7)
    assert cpu_list("0\n") == (0,)


@pytest.mark.parametrize(
    ("online", "want"), [("0\n", ()), ("0-3\n", (0, 1, 2, 3)), ("0,2\n", (0, 2))]
)
def test_rps_targets(tmp_path: Path, online: str, want: tuple[int, ...]) -> None:
    path = tmp_path / "online"
    path.write_text(online)
    assert rps_targets("all", str(path)) == want  # the online CPUs; none when only one is
    assert rps_targets("off", str(path)) == ()
    assert rps_targets((1, 3), str(path)) == (1, 3)


def test_rps_targets_without_sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert rps_targets("all", str(tmp_path / "missing")) == (0, 1, 2, 3)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert rps_targets("all", str(tmp_path / "missing")) == ()


def _device(name: str) -> TunDevice:
    """A TunDevice without a device behind it: spread_receive needs only its name."""
    dev = TunDevice.__new__(TunDevice)
    dev.name = name
    return dev


def _sysfs(root: Path, name: str) -> tuple[Path, Path]:
    """A device in a fake sysfs: its alias file, and its RPS mask file."""
    d = root / name
    (d / "queues" / "rx-0").mkdir(parents=True)
    (d / "ifalias").write_text("\n")
    (d / "queues" / "rx-0" / "rps_cpus").write_text("0\n")
    return d / "ifalias", d / "queues" / "rx-0" / "rps_cpus"


def test_spread_receive_marks_the_device_then_writes_the_mask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    alias, rps = _sysfs(tmp_path, "pkst0")
    calls: list[tuple[str, ...]] = []

    def ip(*args: str) -> None:  # netlink in this namespace: the alias shows in its sysfs
        calls.append(args)
        alias.write_text(args[-1] + "\n")

    monkeypatch.setattr(tun, "_ip", ip)
    dev = _device("pkst0")
    with caplog.at_level(logging.WARNING):
        assert dev.spread_receive((0, 1), sysfs=str(tmp_path)) == (0, 1)
    assert rps.read_text() == "00000003" and dev.rps_cpus == (0, 1)  # for stats
    ((*head, mark),) = calls
    assert head == ["link", "set", "dev", "pkst0", "alias"]
    assert mark.startswith(f"pktswitch pid {os.getpid()} ") and len(mark.split()[-1]) == 8
    assert caplog.text == ""


def test_spread_receive_writes_nothing_into_another_namespaces_sysfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A sysfs mounted in another namespace may show a device of the same name and index:
    the mark set through netlink does not show there, and the switch leaves it alone."""
    alias, rps = _sysfs(tmp_path, "pkst0")
    alias.write_text("pktswitch pid 1 0badc0de\n")  # another switch's device
    monkeypatch.setattr(tun, "_ip", lambda *args: None)
    with caplog.at_level(logging.WARNING):
        assert _device("pkst0").spread_receive((0,), sysfs=str(tmp_path)) == ()
    assert rps.read_text() == "0\n"
    assert "RPS not set on pkst0" in caplog.text and "another namespace's" in caplog.text


def test_spread_receive_says_which_cpus_the_kernel_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    alias, rps = _sysfs(tmp_path, "pkst0")
    monkeypatch.setattr(tun, "_ip", lambda *args: alias.write_text(args[-1]))
    real_open = open

    def kernel_open(path: object, mode: str = "r", *a: object, **kw: object) -> object:
        if str(path) == str(rps) and mode == "w":  # the kernel keeps the online CPUs only
            f = real_open(path, mode, *a, **kw)  # type: ignore[call-overload]
            write = f.write
            f.write = lambda mask: write(cpu_mask(set(mask_cpus(mask)) & {0, 1}))
            return f
        return real_open(path, mode, *a, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", kernel_open)
    with caplog.at_level(logging.WARNING):
        assert _device("pkst0").spread_receive((1, 5), sysfs=str(tmp_path)) == (1,)
    assert "switch.rps_cpus: the kernel left out CPUs [5]" in caplog.text


def test_spread_receive_without_the_device_in_sysfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tun, "_ip", lambda *args: None)
    with caplog.at_level(logging.WARNING):
        assert _device("pkst0").spread_receive((0,), sysfs=str(tmp_path)) == ()
    assert "RPS not set on pkst0" in caplog.text


def test_no_cpus_touch_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tun, "_ip", lambda *args: pytest.fail("no RPS: no alias either"))
    assert _device("pkst0").spread_receive((), sysfs=str(tmp_path)) == ()


@pytest.mark.parametrize(
    ("shown", "kind"),
    [
        ("qdisc noqueue 0: root refcnt 2 \n", "noqueue"),
        (
            "qdisc pfifo_fast 0: root refcnt 2 bands 3 priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1\n",
            "pfifo_fast",
        ),
        ("qdisc fq_codel 0: parent :1 limit 10240p flows 1024\nqdisc mq 0: root \n", "mq"),
        ("", ""),
    ],
)
def test_root_qdisc_as_tc_shows_it(shown: str, kind: str) -> None:
    assert root_qdisc(shown) == kind


def test_no_qdisc_replaces_the_root_and_reads_it_back(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []

    def tc(*args: str) -> str:
        calls.append(args)
        return "qdisc noqueue 0: root refcnt 2 \n"

    monkeypatch.setattr(tun, "_tc", tc)
    assert _device("pkst0").no_qdisc() == "noqueue"
    assert calls == [
        ("qdisc", "replace", "dev", "pkst0", "root", "noqueue"),
        ("qdisc", "show", "dev", "pkst0"),
    ]


REFUSED = SetupError("tc qdisc replace dev pkst0 root noqueue: Operation not permitted")


@pytest.mark.parametrize(
    ("replaced", "shown", "kind", "warning"),
    [  # tc refuses, and the old qdisc stays; tc replaces, and shows another one
        (REFUSED, "qdisc pfifo_fast 0: root refcnt 2\n", "pfifo_fast", "stays (tc qdisc replace"),
        ("", "qdisc fq_codel 0: root refcnt 2\n", "fq_codel", "is fq_codel, not noqueue"),
    ],
)
def test_a_qdisc_other_than_noqueue_is_reported_and_said(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    replaced: str | SetupError,
    shown: str,
    kind: str,
    warning: str,
) -> None:
    def tc(*args: str) -> str:
        if args[1] == "replace" and isinstance(replaced, SetupError):
            raise replaced
        return replaced if args[1] == "replace" else shown

    monkeypatch.setattr(tun, "_tc", tc)
    with caplog.at_level(logging.WARNING):
        assert _device("pkst0").no_qdisc() == kind
    assert f"the qdisc of pkst0 {warning}" in caplog.text


def test_without_tc_the_qdisc_is_unknown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no tc to run: a warning, not a crash
    with caplog.at_level(logging.WARNING):
        assert _device("pkst0").no_qdisc() == "unknown"
    assert "the qdisc of pkst0 stays (tc qdisc replace" in caplog.text
    assert "No such file" in caplog.text and "cannot read the qdisc of pkst0" in caplog.text


def test_a_hung_ip_rule_is_a_set_up_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Looking for a killed switch's stale rules: a rule that is not there ends the search,
    an `ip` that hangs is a SetupError naming the command (as every other set-up step's)."""
    import subprocess

    calls: list[tuple[str, ...]] = []

    def run(cmd: tuple[str, ...], **kw: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        if len(calls) == 3:
            raise subprocess.TimeoutExpired(cmd, kw["timeout"])  # type: ignore[arg-type]
        return subprocess.CompletedProcess(cmd, 0 if len(calls) == 1 else 2, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    spec = ("from", "192.0.2.1", "table", "4242")
    tun._remove_stale_rules(spec)  # one copy removed, then none left
    assert calls == [("ip", "rule", "del", *spec)] * 2
    with pytest.raises(SetupError, match=r"ip rule del from 192\.0\.2\.1 table 4242: .*timed out"):
        tun._remove_stale_rules(spec)


def test_stats_say_what_the_device_has() -> None:
    """`stats` adds the device's facts to the switch's counters."""
    from pktswitch.control.daemon import handlers
    from pktswitch.core.switch import ServiceState, Switch
    from pktswitch.sched.pool import BackendState
    from pktswitch.sched.registry import make

    svc = ServiceState("web", "203.0.113.10", 80, make("rr"), [BackendState("A", "192.0.2.1", 80)])
    sw = Switch([svc], snat=["203.0.113.1"])
    dev = _device("pkst0")
    dev.qdisc, dev.rps_cpus = "noqueue", (1, 3)
    s = handlers(sw, None, tun=dev)["stats"]({})
    assert (s["device_qdisc"], s["rps_cpus"]) == ("noqueue", [1, 3])
    assert "device_qdisc" not in handlers(sw, None)["stats"]({})  # no device: not said


@pytest.mark.parametrize(
    ("shown", "dev"),
    [
        ("192.0.2.1 dev veth1 src 192.0.2.254 uid 0 \n    cache \n", "veth1"),
        ("192.0.2.1 via 192.0.2.9 dev eth0 src 192.0.2.254 uid 0\n    cache\n", "eth0"),
        ("local 192.0.2.1 dev lo table local src 192.0.2.1 uid 0\n    cache <local>\n", None),
        ("unreachable 192.0.2.1 uid 0\n", None),
        ("", None),
    ],
)
def test_route_device_as_ip_route_get_shows_it(shown: str, dev: str | None) -> None:
    assert tun.route_device(shown) == dev


def test_nat_reply_rules_take_replies_only_from_the_backends_side(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    routes = {"192.0.2.1": "192.0.2.1 dev vb0 src 192.0.2.254 uid 0\n", "192.0.2.2": ""}
    added: list[tuple[str, ...]] = []

    def run(*cmd: str) -> str:
        if cmd[:3] == ("ip", "route", "get"):
            return routes[cmd[3]]
        added.append(cmd[1:])
        return ""

    monkeypatch.setattr(tun, "_run", run)
    monkeypatch.setattr(tun, "_exec", lambda *cmd: subprocess.CompletedProcess(cmd, 1, "", ""))
    dev = tun.TunDevice.__new__(tun.TunDevice)
    dev.name, dev._undo = "pks0", []
    dev.steer_replies(
        4242, [("192.0.2.1", 80, "tcp"), ("192.0.2.2", 80, "tcp"), ("192.0.2.2", 53, "udp")]
    )
    rules = [a for a in added if a[0] == "rule"]
    tail = ("lookup", "4242", "priority", str(tun.RULE_PRIORITY))
    assert rules == [
        (
            "rule",
            "add",
            "from",
            "192.0.2.1/32",
            "iif",
            "vb0",
            "ipproto",
            "tcp",
            "sport",
            "80",
            *tail,
        ),
        ("rule", "add", "from", "192.0.2.2/32", "ipproto", "tcp", "sport", "80", *tail),
        ("rule", "add", "from", "192.0.2.2/32", "ipproto", "udp", "sport", "53", *tail),
        ("rule", "add", "from", "192.0.2.1/32", "iif", "vb0", "ipproto", "icmp", *tail),
        ("rule", "add", "from", "192.0.2.2/32", "ipproto", "icmp", *tail),
    ]
