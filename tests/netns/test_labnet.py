"""The netns lab itself: builds, routes plain traffic to every backend, and cleans up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "netns-lab"))

import labnet
from netns_helpers import NETNS

pytestmark = NETNS


def _ns_pids(ns: str) -> list[int]:
    out = subprocess.run(
        ["ip", "netns", "pids", ns], check=True, capture_output=True, text=True, timeout=10
    ).stdout
    return [int(p) for p in out.split()]


def test_lab_up_routes_to_backends_and_down_cleans_everything() -> None:
    before = set(labnet.lab_names_in_use())
    with labnet.Lab() as lab:
        names = set(lab.ns.values())
        run_dir = lab.run_dir
        assert names <= set(labnet.lab_names_in_use())
        for role, want in (("a", "A\n"), ("b", "B\n"), ("c", "C\n")):
            assert lab.curl(f"http://{lab.backend_ip(role)}/") == want
        service_pids = [p.pid for procs in lab.services.values() for p in procs.values()]
        assert len(service_pids) == 6  # nginx master + iperf3 per backend
        # everything running in the lab's namespaces (includes the nginx workers)
        ns_pids = [pid for ns in names for pid in _ns_pids(ns)]
        assert set(service_pids) <= set(ns_pids)
        assert _ns_pids(lab.ns["lb"]) == []  # nothing runs in the switch's namespace

    assert not names & set(labnet.lab_names_in_use())
    assert set(labnet.lab_names_in_use()) <= before
    assert [pid for pid in ns_pids if labnet.pid_alive(pid)] == []
    assert not run_dir.exists()
    lab.down()  # idempotent
