"""pktswitch on real TCP: a lab of namespaces, curl, iperf3 and tcpdump, in both NAT modes.

The checksum oracle is the backend's own capture (`tcpdump -Q in`: only what it received),
decoded and recomputed by scapy; the lab turns tx checksum offload off on the switch's outgoing
ports so that the kernel finishes every checksum in software before the backend sees it.
"""

from __future__ import annotations

import collections
import os
import sys
import time
from pathlib import Path

import pytest
from netns_helpers import NETNS, Lab, bad_checksums, hold_connections, iperf3_captured, wait_until
from switchlab import Switch, config_text

from pktswitch.io import tun

pytestmark = NETNS


@pytest.mark.parametrize("mode", ["fullnat", "nat"])
def test_round_robin_30_requests_and_the_live_table(lab: Lab, mode: str) -> None:
    with Switch(lab, config_text(lab, mode)) as sw:
        answers = [lab.curl(f"http://{lab.VIP}/").strip() for _ in range(30)]
        why = (answers, sw.stats(), sw.flows())  # on failure: what the switch saw
        assert collections.Counter(answers) == {"A": 10, "B": 10, "C": 10}, why
        assert answers[:6] == ["A", "B", "C", "A", "B", "C"]

        proc, lines = hold_connections(lab, 3)
        # "198.51.100.2:51604 -> A": the client's port and the backend that answered
        held = {line.split(" -> ")[0]: line.split(" -> ")[1] for line in lines}
        rows = {r["client"]: r for r in sw.flows()}
        for client, backend in held.items():
            r = rows[client]
            assert (r["state"], r["backend"], r["vip"]) == ("ESTABLISHED", backend, f"{lab.VIP}:80")
            assert r["backend_address"] == f"{lab.BACKENDS[backend]}:80"
            assert r["packets_in"] >= 3 and r["packets_out"] >= 2
            if mode == "fullnat":
                snat_ip, snat_port = r["snat"].split(":")
                assert snat_ip == lab.SNAT and 1024 <= int(snat_port) <= 65535
            else:
                assert r["snat"] is None
        done = [r for c, r in rows.items() if c not in held]
        assert len(done) == 30 and {r["state"] for r in done} == {"TIME_WAIT"}
        lab.stop(proc)
        s = sw.stats()
        assert s["flows_created"] == 33
        assert s["packets_in"] == s["packets_forwarded"] + sum(s["dropped"].values())
        assert sw.stop() == 0
        assert sw.leftovers() == []


def test_flows_expire_on_time_and_snat_ports_are_used_again(lab: Lab) -> None:
    timeouts = {"time_wait": 1, "close": 1, "syn_recv": 5}
    cfg = config_text(
        lab, "fullnat", timeouts=timeouts, snat_ports=(20000, 20001), web_backends="A"
    )
    with Switch(lab, cfg) as sw:
        assert lab.curl(f"http://{lab.VIP}/").strip() == "A"
        assert lab.curl(f"http://{lab.VIP}/").strip() == "A"
        # curl is gone once its own FIN is out; the server's FIN may still be on its way
        rows = wait_until(
            "both flows in TIME_WAIT",
            lambda: (rows := sw.flows()) and all(r["state"] == "TIME_WAIT" for r in rows) and rows,
            timeout=5,
            step=0.01,
        )
        t0 = time.monotonic()
        assert sorted(r["snat"] for r in rows) == [f"{lab.SNAT}:20000", f"{lab.SNAT}:20001"]
        assert all(r["expires_in"] <= 1 for r in rows)
        wait_until("the flows to expire", lambda: sw.flows() == [], timeout=5, step=0.02)
        elapsed = time.monotonic() - t0
        assert elapsed < 1.5, f"TIME_WAIT 1 s flows took {elapsed:.2f} s to leave"
        assert sw.stats()["flows_expired"] == {"TIME_WAIT": 2}
        # the pool has two ports: new connections must get the freed ones again
        assert lab.curl(f"http://{lab.VIP}/").strip() == "A"
        (row,) = sw.flows()
        assert row["snat"] in (f"{lab.SNAT}:20000", f"{lab.SNAT}:20001")
        assert sw.stats()["snat_exhausted"] == 0


FIXED_PORT_GET = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.settimeout(5)
s.bind(("", int(sys.argv[2])))
s.connect((sys.argv[1], 80))
s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
data = b""
while chunk := s.recv(4096):
    data += chunk
print(data.split(b"\\r\\n\\r\\n", 1)[1].decode().strip())
"""


def test_client_port_reuse_starts_a_fresh_flow(lab: Lab) -> None:
    """A client that reuses its port while the switch holds the old flow in TIME_WAIT gets a
    fresh flow, scheduled anew, instead of the old backend and SNAT port (IPVS conn_reuse_mode).
    """
    with Switch(lab, config_text(lab, "fullnat")) as sw:
        get = [sys.executable, "-c", FIXED_PORT_GET, lab.VIP, "45000"]
        assert lab.exec("cli", *get).stdout.strip() == "A"
        (row,) = sw.flows()
        assert row["state"] == "TIME_WAIT"  # nginx closed first (HTTP/1.0): TIME_WAIT is A's
        # the client closed last: its socket is gone once A acknowledged its FIN
        ss = ["ss", "-tanH", "sport", "= :45000"]
        wait_until("the client's old socket gone", lambda: not lab.exec("cli", *ss).stdout.strip())
        assert lab.exec("cli", *get).stdout.strip() == "B"
        s = sw.stats()
        assert (s["flows_reused"], s["flows_created"]) == (1, 2)
        assert s["flows_expired"] == {"TIME_WAIT": 1}
        (row,) = sw.flows()
        assert (row["client"], row["backend"]) == (f"{lab.CLIENT_IP}:45000", "B")


def test_the_device_has_no_qdisc_in_front_of_its_queue(lab: Lab) -> None:
    """A TUN device never stops its queue (it drops what its ring cannot take), so the
    default qdisc only costs each packet: the switch replaces it with noqueue, says so, and
    traffic flows through it."""
    with Switch(lab, config_text(lab)) as sw:
        shown = lab.exec("lb", "tc", "qdisc", "show", "dev", sw.tun).stdout
        (line,) = shown.splitlines()  # "qdisc noqueue 800f: root refcnt 2"
        assert line.split()[:2] == ["qdisc", "noqueue"] and line.split()[3] == "root"
        assert sw.stats()["device_qdisc"] == "noqueue"
        assert [lab.curl(f"http://{lab.VIP}/").strip() for _ in range(3)] == ["A", "B", "C"]


def _received_rps(cpu: int) -> int:
    """How often `cpu` was handed packets by another CPU's RPS (/proc/net/softnet_stat: a row
    per online CPU, whose number is the 13th column where the kernel prints it)."""
    with open("/proc/net/softnet_stat") as f:
        rows = [line.split() for line in f]
    (row,) = [r for n, r in enumerate(rows) if (int(r[12], 16) if len(r) > 12 else n) == cpu]
    return int(row[9], 16)


def _rps_mask(lab: Lab, sw: Switch) -> int:
    out = lab.exec("lb", "cat", f"/sys/class/net/{sw.tun}/queues/rx-0/rps_cpus").stdout
    return int(out.replace(",", ""), 16)


def test_rps_hands_what_the_switch_writes_to_the_named_cpus(lab: Lab) -> None:
    """rps_cpus = [0] with the switch kept on CPU 1: the kernel's work on what it writes is
    queued to CPU 0, which receives packets from RPS; "all" names every CPU; off by default,
    and then the device is left as it was made."""
    with Switch(lab, config_text(lab)) as sw:
        assert sw.stats()["rps_cpus"] == [] and _rps_mask(lab, sw) == 0
        assert "alias" not in lab.exec("lb", "ip", "link", "show", "dev", sw.tun).stdout
        assert lab.curl(f"http://{lab.VIP}/").strip() == "A"
    online = tun.cpu_list(Path("/sys/devices/system/cpu/online").read_text())
    if len(online) == 1:  # "all" is no CPU there: queueing to the writer's CPU only adds a step
        with Switch(lab, config_text(lab, switch_keys={"rps_cpus": "all"})) as sw:
            assert sw.stats()["rps_cpus"] == []
        return
    with Switch(lab, config_text(lab, switch_keys={"rps_cpus": "all"})) as sw:
        assert sw.stats()["rps_cpus"] == list(online)
        assert _rps_mask(lab, sw) == sum(1 << c for c in online)
        assert sw.proc is not None  # the mark that showed sysfs to be this namespace's
        link = lab.exec("lb", "ip", "link", "show", "dev", sw.tun).stdout
        assert f"alias pktswitch pid {sw.proc.pid} " in link
    first, second = online[:2]
    with Switch(lab, config_text(lab, switch_keys={"rps_cpus": [first]})) as sw:
        assert sw.stats()["rps_cpus"] == [first] and _rps_mask(lab, sw) == 1 << first
        assert sw.proc is not None
        for tid in os.listdir(f"/proc/{sw.proc.pid}/task"):
            os.sched_setaffinity(int(tid), {second})
        before = _received_rps(first)
        answers = [lab.curl(f"http://{lab.VIP}/").strip() for _ in range(6)]
        assert answers == ["A", "B", "C"] * 2
        assert _received_rps(first) > before


@pytest.mark.parametrize(
    ("mode", "offload"), [("fullnat", True), ("nat", True), ("fullnat", False)]
)
def test_iperf3_10s_with_zero_bad_checksums_at_the_backend(
    lab: Lab, mode: str, offload: bool
) -> None:
    """With offloads the switch rewrites partial checksums of GSO super-packets; the kernel
    finishes them on the way out (tx offload is off on the switch's ports), so a wrong partial
    sum arrives as a wrong checksum."""
    with Switch(lab, config_text(lab, mode, offload=offload)) as sw:
        assert sw.stats()["offload"] is offload
        end, pcap = iperf3_captured(lab, f"iperf-{mode}-{offload}", 10)
        assert end["sum_received"]["bytes"] >= 10 * 20e6 / 8 * 0.9
        n, bad, seen = bad_checksums(pcap)
        assert n > 1000, f"only {n} packets captured"
        assert bad == 0, f"{bad} of {n} packets arrived at backend A with a wrong checksum: {seen}"
        (service,) = {r["service"] for r in sw.flows()}
        assert service == "bulk"
        largest = sw.stats()["largest_read_bytes"]
        if offload:  # super-packets came through, each rewritten as one
            assert largest > 1500 + 10, largest
        else:
            assert largest <= 1500, largest
        pcap.unlink()
