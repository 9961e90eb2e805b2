"""The inspection commands against a switch forwarding real connections."""

from __future__ import annotations

import base64
import json
import subprocess

from netns_helpers import NETNS, Lab, hold_connections, wait_until
from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap
from scapy_oracle import checksums_ok
from switchlab import Switch, config_text

pytestmark = NETNS


def test_flows_json_while_held_and_trace_with_pcap(lab: Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with Switch(lab, config_text(lab)) as sw:
        holder, lines = hold_connections(lab, 1)
        client, backend = lines[0].split(" -> ")
        (row,) = sw.cli_json("flows", "--state", "ESTABLISHED")
        assert (row["client"], row["backend"], row["state"]) == (client, backend, "ESTABLISHED")
        assert row["snat"].startswith(f"{lab.SNAT}:")
        lab.stop(holder)  # the holder's sockets close with it: FIN or RST, then expiry
        wait_until("the held flow to leave ESTABLISHED", lambda: not sw.flows(state="ESTABLISHED"))

        pcap = tmp_path / "trace.pcap"
        tracer = subprocess.Popen(
            sw.command(
                "trace", "--json", "--count", "4", "--pcap", str(pcap), "--snaplen", "65535"
            ),
            stdout=subprocess.PIPE,
            text=True,
        )
        wait_until("the trace to subscribe", lambda: sw.stats()["tracing"])
        assert lab.curl(f"http://{lab.VIP}/").strip() in ("A", "B", "C")
        out, _ = tracer.communicate(timeout=10)
        events = [json.loads(line) for line in out.splitlines()]
        assert len(events) == 4
        syn = events[0]
        assert syn["transition"] == ["NONE", "SYN_RECV"] and syn["before"]["flags"] == "S"
        assert syn["before"]["dst"] == lab.VIP and syn["after"]["src"] == lab.SNAT
        assert syn["changed"] == ["src", "sport", "dst", "ip_csum", "tcp_csum"]
        packets = rdpcap(str(pcap))
        assert len(packets) == 8  # before and after of each
        for i, ev in enumerate(events):
            before, after = bytes(packets[2 * i]), bytes(packets[2 * i + 1])
            assert before == base64.b64decode(ev["raw_before"])
            assert after == base64.b64decode(ev["raw_after"])
            assert checksums_ok(IP(before)) and checksums_ok(IP(after))
            assert IP(after).chksum == ev["after"]["ip_csum"]
            assert IP(after)[TCP].chksum == ev["after"]["tcp_csum"]
