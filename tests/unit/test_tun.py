"""RPS on the TUN device: the CPU masks written to sysfs, and where nothing may be written."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from pktswitch.io.tun import TunDevice, cpu_mask, mask_cpus, rps_targets


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


def test_rps_targets() -> None:
    assert rps_targets("off") == ()
    assert rps_targets((1, 3)) == (1, 3)
    n = os.cpu_count() or 1
    assert rps_targets("all") == (tuple(range(n)) if n > 1 else ())


def _device(name: str) -> TunDevice:
    """A TunDevice without a device behind it: spread_receive needs only its name."""
    dev = TunDevice.__new__(TunDevice)
    dev.name = name
    return dev


def _sysfs(root: Path, name: str, ifindex: int, tun: bool = True) -> Path:
    d = root / name
    (d / "queues" / "rx-0").mkdir(parents=True)
    (d / "ifindex").write_text(f"{ifindex}\n")
    (d / "queues" / "rx-0" / "rps_cpus").write_text("0\n")
    if tun:
        (d / "tun_flags").write_text("0x1001\n")
    return d / "queues" / "rx-0" / "rps_cpus"


def test_spread_receive_writes_the_mask_and_reads_it_back(tmp_path: Path) -> None:
    # "lo" exists in every namespace with ifindex 1: a stand-in for the switch's device
    rps = _sysfs(tmp_path, "lo", socket.if_nametoindex("lo"))
    assert _device("lo").spread_receive((0, 1), sysfs=str(tmp_path)) == (0, 1)
    assert rps.read_text() == "00000003"


@pytest.mark.parametrize(
    ("ifindex_offset", "tun", "why"),
    [(1, True, "is not this namespace's TUN device lo"), (0, False, "is not this namespace's")],
)
def test_spread_receive_writes_nothing_into_another_namespaces_sysfs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, ifindex_offset: int, tun: bool, why: str
) -> None:
    """A sysfs mounted in another namespace may show a device of the same name: another
    ifindex, or no TUN device, and the switch leaves it alone."""
    rps = _sysfs(tmp_path, "lo", socket.if_nametoindex("lo") + ifindex_offset, tun=tun)
    with caplog.at_level(logging.WARNING):
        assert _device("lo").spread_receive((0,), sysfs=str(tmp_path)) == ()
    assert rps.read_text() == "0\n"
    assert why in caplog.text and "RPS not set on lo" in caplog.text


def test_spread_receive_without_the_device_in_sysfs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert _device("lo").spread_receive((0,), sysfs=str(tmp_path)) == ()
    assert "RPS not set on lo" in caplog.text
