"""SYN cookies on real TCP (syn_cookies = "on": every new connection through them): Linux
clients and backends, curl and iperf3, complete their handshakes with the switch in the
middle, every packet the backend receives has right checksums after the sequence numbers
were moved, and each connection opened by its cookie's ACK."""

from __future__ import annotations

from netns_helpers import NETNS, Lab, bad_checksums, iperf3_captured
from switchlab import Switch, config_text

pytestmark = NETNS

CURLS = 6


def test_curl_and_iperf3_through_syn_cookies(lab: Lab) -> None:
    with Switch(lab, config_text(lab, switch_keys={"syn_cookies": "on"})) as sw:
        bodies = [lab.curl(f"http://{lab.VIP}/").strip() for _ in range(CURLS)]
        assert sorted(bodies) == ["A", "A", "B", "B", "C", "C"]  # rr, each connection whole
        end, pcap = iperf3_captured(lab, "iperf-cookies", 3)
        assert end["sum_received"]["bytes"] >= 3 * 20e6 / 8 * 0.9
        n, bad, seen = bad_checksums(pcap)
        assert n > 100, f"only {n} packets captured"
        assert bad == 0, f"{bad} of {n} packets arrived at backend A with a wrong checksum: {seen}"
        pcap.unlink()
        s = sw.stats()
        cookies = s["syn_cookies"]
        # curl's connections and iperf3's two (control, data): each SYN answered with a
        # cookie, each opened by its ACK (a resent SYN would be answered again: at least)
        assert cookies["opened"] == s["flows_created"] == CURLS + 2, s
        assert cookies["sent"] >= cookies["opened"]
        assert set(s["dropped"]) - {"ip_version"} == set(), s["dropped"]
        assert sw.stop() == 0
