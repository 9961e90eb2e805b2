"""Access control and ICMP on real packets: refused clients, a greedy client held to its
per-client limit while another connects, pings to the VIP, and an ICMP error from a backend
reaching the client's socket (the kernel checks its checksum and matches the
quoted header to the socket, so a wrong translation would leave curl waiting for a timeout)."""

from __future__ import annotations

import json
import sys
import time

import pytest
from netns_helpers import LAB_DIR, NETNS, HeldClient, Lab, wait_until
from switchlab import Switch, config_text

pytestmark = NETNS


def curl_status(lab: Lab, source: str, timeout: float) -> tuple[int, float, str]:
    """curl's exit code, how long it took, and its output, from `source`."""
    start = time.monotonic()
    res = lab.exec(
        "cli",
        "curl",
        "-sS",
        "--noproxy",
        "*",
        "--interface",
        source,
        "--connect-timeout",
        str(timeout),
        f"http://{lab.VIP}/",
        check=False,
        timeout=timeout + 5,
    )
    return res.returncode, time.monotonic() - start, (res.stdout + res.stderr).strip()


def test_acl_refuses_denied_sources_and_counts_them(lab: Lab) -> None:
    allowed, denied = lab.CLIENT_IP, lab.EXTRA_CLIENT_IPS[0]
    acl = {"allow": ["198.51.100.0/24"], "deny": [f"{denied}/32"]}
    with Switch(lab, config_text(lab, web_backends="A", options=acl)) as sw:
        assert curl_status(lab, allowed, 2)[0::2] == (0, "A")
        code, _, out = curl_status(lab, denied, 0.5)
        assert code == 28, out  # no answer at all: the SYN was dropped
        s = sw.stats()
        assert s["acl_denied"] == {"web": s["dropped"]["acl_denied"]}
        assert s["dropped"]["acl_denied"] >= 1
        assert s["flows_created"] == 1
        assert sw.stop() == 0


GREEDY_TRIES = 40
MAX_FLOWS = 8


def test_a_greedy_client_cannot_fail_another_clients_connections(lab: Lab) -> None:
    greedy = lab.EXTRA_CLIENT_IPS[0]
    with Switch(lab, config_text(lab, per_client={"max_flows": MAX_FLOWS})) as sw:
        proc = lab.spawn(
            "cli", sys.executable, str(LAB_DIR / "greedy.py"),
            lab.VIP, "80", greedy, str(GREEDY_TRIES), "60",
        )  # fmt: skip
        log = lab.log_path(proc)
        assert log is not None
        line = wait_until("the greedy client's count", lambda: log.read_text().strip(), 30)
        assert json.loads(line) == {"established": MAX_FLOWS, "refused": GREEDY_TRIES - MAX_FLOWS}
        # meanwhile another client: new connections, one after another, each answered
        answers = [curl_status(lab, lab.CLIENT_IP, 5) for _ in range(2 * MAX_FLOWS)]
        assert [code for code, _, _ in answers] == [0] * 2 * MAX_FLOWS, answers
        held = [f for f in sw.flows() if f["client"].startswith(f"{greedy}:")]
        assert [f["state"] for f in held] == ["ESTABLISHED"] * MAX_FLOWS
        s = sw.stats()
        refused = s["dropped"]["client_max_flows"]  # each SYN refused, and each retry of one
        assert refused >= GREEDY_TRIES - MAX_FLOWS
        assert s["client_limited"] == {"web": {"client_max_flows": refused}}
        assert set(s["dropped"]) - {"ip_version"} == {"client_max_flows"}  # (IPv6 neighbour talk)
        lab.stop(proc)
        assert sw.stop() == 0


def test_ping_to_the_vip_is_answered_by_the_switch(lab: Lab) -> None:
    with Switch(lab, config_text(lab)) as sw:
        res = lab.exec("cli", "ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", lab.VIP, check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "3 packets transmitted, 3 received" in res.stdout
        assert f"from {lab.VIP}" in res.stdout
        s = sw.stats()
        assert s["icmp_echo_replies"] == 3
        assert sw.stop() == 0


@pytest.mark.parametrize("mode", ["fullnat", "nat"])
def test_a_backends_port_unreachable_fails_the_clients_connect_at_once(lab: Lab, mode: str) -> None:
    """Backend A rejects port 80 with ICMP port unreachable (nftables, in A's namespace): the
    switch translates the error, so curl fails with 'connection refused' (exit 7) at once."""
    table = "pkstest"
    lab.exec("a", "nft", "add", "table", "inet", table)
    try:
        hook = "{ type filter hook input priority 0 ; }"
        lab.exec("a", "nft", "add", "chain", "inet", table, "input", hook)
        reject = "tcp dport 80 reject with icmp type port-unreachable"
        lab.exec("a", "nft", "add", "rule", "inet", table, "input", *reject.split())
        with Switch(lab, config_text(lab, mode, web_backends="A")) as sw:
            code, took, out = curl_status(lab, lab.CLIENT_IP, 3)
            assert code == 7, out  # ECONNREFUSED from the ICMP error, not a timeout (28)
            assert took < 1.0, took
            s = sw.stats()
            assert s["icmp_errors_translated"]["to_client"] >= 1
            assert "icmp_no_flow" not in s["dropped"]
            assert sw.stop() == 0
    finally:
        lab.exec("a", "nft", "delete", "table", "inet", table, check=False)


def test_an_error_about_a_backend_bound_packet_reaches_the_switch_only_from_the_backends(
    lab: Lab,
) -> None:
    """The same forged error (port unreachable to the SNAT address, quoting SNAT:port >
    backend:80 of a live flow with a guessed sequence number) sent from backend A's
    namespace reaches the switch (and is dropped there: icmp_out_of_window), sent from the
    client's never does: the host routes the SNAT address into the switch only from the
    backends' side."""
    with Switch(lab, config_text(lab, web_backends="A")) as sw, HeldClient(lab) as held:
        assert held.ask() == "answer A"
        (flow,) = [f for f in sw.flows() if f["client"] == f"{held.ip}:{held.port}"]
        snat, _, sport = flow["snat"].partition(":")
        forge = [sys.executable, str(LAB_DIR / "icmpforge.py"), snat, snat, sport]
        forge += [lab.BACKENDS["A"], "80", "12345"]
        lab.exec("cli", *forge)
        lab.exec("a", *forge)

        def icmp_drops() -> dict[str, int]:
            dropped = sw.stats()["dropped"]
            return {k: v for k, v in dropped.items() if k.startswith("icmp")}

        wait_until("A's error", lambda: icmp_drops(), 10)
        # a last error from the client side would have come in by now: a ping after it
        lab.exec("cli", "ping", "-n", "-c", "1", "-W", "2", lab.VIP)
        assert icmp_drops() == {"icmp_out_of_window": 1}
        assert sw.stats()["icmp_errors_translated"] == {"to_backend": 0, "to_client": 0}
        assert held.ask() == "answer A"
        assert sw.stop() == 0
