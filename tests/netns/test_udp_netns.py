"""UDP services on real datagrams: DNS (dnsmasq on each backend, dig in the client) spread by
the scheduler in both NAT modes, a UDP checksum of 0 kept as "none", iperf3 -u through a UDP
VIP with its loss reported, and UDP flows idling out on time.

The checksum oracle is each backend's own capture, recomputed by scapy (netns_helpers)."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslab import DNS_PORT, NAME, dig, start_dns
from netns_helpers import NETNS, Lab, bad_checksums, wait_until
from switchlab import BULK_PORT, Switch, config_text, service_text

pytestmark = NETNS

# One DNS query for who.lab TXT from a socket with SO_NO_CHECK: the kernel sends it with a UDP
# checksum of 0 ("none", RFC 768); prints the TXT of the answer and the socket's port.
NO_CHECKSUM_QUERY = r"""
import socket, sys
name = sys.argv[2].encode()
q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
q += b"".join(bytes([len(p)]) + p for p in name.split(b".")) + b"\x00\x00\x10\x00\x01"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK
s.settimeout(3)
for _ in range(3):
    s.sendto(q, (sys.argv[1], int(sys.argv[3])))
    try:
        a = s.recv(512)
        break
    except TimeoutError:
        continue
print(s.getsockname()[1], a[-1:].decode())
"""


@pytest.fixture(scope="module")
def dns(lab: Lab) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """dnsmasq on every backend, for this module's tests, by role (a test that stops one
    starts it again); stopped by PID at its end."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for role in lab.backend_roles:
            procs[role] = start_dns(lab, role)
        yield procs
    finally:
        for proc in procs.values():
            lab.stop(proc)


def dns_config(lab: Lab, mode: str, health: dict[str, object] | None = None, **keys: object) -> str:
    backends = {"A": 1, "B": 1, "C": 1}
    svc = service_text(lab, "dns", DNS_PORT, "rr", backends, keys or None, health, protocol="udp")
    return config_text(lab, mode, extra=[svc])


@pytest.mark.parametrize("mode", ["fullnat", "nat"])
def test_dns_queries_spread_over_the_backends(lab: Lab, dns: object, mode: str) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.utils import rdpcap

    caps = {r: lab.capture(r, "eth0", f"udp port {DNS_PORT}", f"dns-{mode}-{r}") for r in "abc"}
    try:
        with Switch(lab, dns_config(lab, mode)) as sw:
            answers = [dig(lab, lab.VIP) for _ in range(30)]
            why = (answers, sw.stats(), sw.flows())
            assert all(len(a) == 1 for a in answers), why
            got = [a[0] for a in answers]
            assert collections.Counter(got) == {"A": 10, "B": 10, "C": 10}, why
            assert got[:6] == ["A", "B", "C", "A", "B", "C"]
            zero = lab.exec(
                "cli", sys.executable, "-c", NO_CHECKSUM_QUERY, lab.VIP, NAME, str(DNS_PORT)
            ).stdout.split()
            assert zero[1] == "A", zero  # the 31st datagram: rr's A again

            rows = [r for r in sw.flows() if r["vip"] == f"{lab.VIP}:{DNS_PORT}"]
            assert len(rows) == 31
            assert {(r["protocol"], r["state"]) for r in rows} == {("udp", "UDP")}
            assert {r["timeout"] for r in rows} == {300}
            assert all(r["packets_in"] >= 1 and r["packets_out"] >= 1 for r in rows), rows
            if mode == "fullnat":
                assert {r["snat"].split(":")[0] for r in rows} == {lab.SNAT}
            else:
                assert {r["snat"] for r in rows} == {None}
            s = sw.stats()
            assert s["flows_created"] == 31
            assert s["packets_in"] == s["packets_forwarded"] + sum(s["dropped"].values())
            assert sw.stop() == 0
    finally:
        pcaps: dict[str, Path] = {r: c.stop() for r, c in caps.items()}
    source = lab.SNAT if mode == "fullnat" else lab.CLIENT_IP
    zeros = []
    for role, pcap in pcaps.items():
        n, bad, seen = bad_checksums(pcap)
        assert n >= 10 and bad == 0, (role, n, seen)
        for p in rdpcap(str(pcap)):
            ip = p[IP]
            assert (ip.src, ip.dst, ip[UDP].dport) == (source, lab.BACKENDS[role.upper()], 53)
            if ip[UDP].chksum == 0:
                zeros.append(role)
    assert zeros == ["a"]  # the query sent without a checksum arrived without one


@pytest.mark.parametrize("mode", ["fullnat", "nat"])
def test_one_packet_spreads_one_client_sockets_queries(lab: Lab, dns: object, mode: str) -> None:
    source = f"{lab.CLIENT_IP}#5300"  # every query from one socket address
    with Switch(lab, dns_config(lab, mode)) as sw:  # without one_packet: the flow keeps it
        kept = [dig(lab, lab.VIP, source=source) for _ in range(3)]
        assert kept == [["A"]] * 3, (kept, sw.flows())
    with Switch(lab, dns_config(lab, mode, one_packet=True)) as sw:
        spread = [dig(lab, lab.VIP, source=source) for _ in range(6)]
        why = (spread, sw.stats(), sw.flows())
        assert [a[0] if len(a) == 1 else a for a in spread] == list("ABCABC"), why
        assert sw.flows() == []  # each ended with its answer
        s = sw.stats()
        assert (s["flows_created"], s["flows_answered"], s["flows_expired"]) == (6, 6, {}), s


def test_udp_flows_idle_out_after_udp_timeout(lab: Lab, dns: object) -> None:
    with Switch(lab, dns_config(lab, "fullnat", udp_timeout=1)) as sw:
        asked = time.monotonic()
        assert dig(lab, lab.VIP) == ["A"]
        rows = sw.flows()
        assert [(r["protocol"], r["state"], r["timeout"]) for r in rows] == [("udp", "UDP", 1)]
        assert 0 < rows[0]["expires_in"] <= 1
        wait_until("the UDP flow to idle out", lambda: not sw.flows(), timeout=15)
        assert time.monotonic() - asked >= 1.0  # not before its second of idleness
        s = sw.stats()
        assert s["flows_expired"] == {"UDP": 1}
        assert s["snat_in_use"] == {lab.SNAT: 0}
        # the next query is a new flow: rr moved on
        assert dig(lab, lab.VIP) == ["B"]
        assert sw.stats()["flows_created"] == 2


@pytest.mark.parametrize("mode", ["fullnat", "nat"])
def test_iperf3_udp_through_a_udp_vip(lab: Lab, mode: str) -> None:
    bulk_udp = service_text(lab, "bulk-udp", BULK_PORT, "rr", {"A": 1}, protocol="udp")
    seconds = 3
    with Switch(lab, config_text(lab, mode, extra=[bulk_udp])) as sw:
        cap = lab.capture("a", "eth0", f"udp port {BULK_PORT}", f"iperf3-udp-{mode}")
        try:
            r = lab.exec(
                "cli",
                "iperf3", "-u", "-c", lab.VIP, "-p", str(BULK_PORT), "-t", str(seconds),
                "-b", "10M", "-l", "1200", "-J",
                timeout=seconds + 30,
            )  # fmt: skip
        finally:
            pcap = cap.stop()
        end = json.loads(r.stdout)["end"]["sum"]
        rows = [r for r in sw.flows() if r["protocol"] == "udp"]
        assert len(rows) == 1 and rows[0]["backend"] == "A", rows
        flow = rows[0]
        stats = sw.stats()
    sent, lost = end["packets"], end["lost_packets"]
    # iperf3's report: the datagrams sent, and of them those the server did not receive
    assert sent >= 1000 and 0 <= lost <= sent, end
    assert "lost_percent" in end
    # the switch forwarded every datagram that reached the server, and its first (iperf3's
    # "connect" datagram) and the server's answer to it
    assert flow["packets_in"] >= sent - lost + 1, (flow, end)
    assert flow["packets_out"] >= 1
    n, bad, seen = bad_checksums(pcap)
    assert bad == 0, seen
    assert n >= sent - lost, (n, end)
    assert stats["packets_in"] == stats["packets_forwarded"] + sum(stats["dropped"].values())


def backend_row(sw: Switch, name: str) -> dict[str, object]:
    (row,) = [r for r in sw.stats_backends() if (r["service"], r["backend"]) == ("dns", name)]
    return row


def test_a_refusing_backend_is_ejected_and_a_failing_check_takes_one_down(
    lab: Lab, dns: dict[str, subprocess.Popen[bytes]]
) -> None:
    """B stops its DNS server: the query sent to it is refused (ICMP port unreachable, which
    reaches dig as such), the switch's own datagram is refused too, and B is ejected, in both
    modes. With a TCP check of port 53, B's checks fail: it is taken down."""
    lab.stop(dns.pop("b"))
    try:
        for mode in ("fullnat", "nat"):
            with Switch(lab, dns_config(lab, mode)) as sw:
                assert dig(lab, lab.VIP, tries=1) == ["A"]
                refused = dig(lab, lab.VIP, tries=1)  # B's turn: refused
                assert "refused" in " ".join(refused), refused  # dig had the ICMP error
                wait_until("B ejected", lambda: backend_row(sw, "B")["health"] == "ejected")
                reason = str(backend_row(sw, "B")["health_reason"])
                assert "ICMP port unreachable, and the switch's check failed" in reason, reason
                after = [dig(lab, lab.VIP) for _ in range(4)]
                assert sorted(a[0] for a in after) == ["A", "A", "C", "C"], after
                assert sw.stats()["icmp_errors_translated"]["to_client"] == 1
        health = {"check": "tcp", "port": DNS_PORT, "interval": 0.2, "timeout": 0.2, "fall": 2}
        cfg = dns_config(lab, "nat", health=health)
        with Switch(lab, cfg) as sw:
            wait_until("B down", lambda: backend_row(sw, "B")["health"] == "down", timeout=15)
            row = backend_row(sw, "B")
            assert "2 checks failed" in str(row["health_reason"]), row
            assert backend_row(sw, "A")["health"] == "up"
            answers = [dig(lab, lab.VIP) for _ in range(4)]
            assert sorted(a[0] for a in answers) == ["A", "A", "C", "C"], answers
    finally:
        dns["b"] = start_dns(lab, "b")
