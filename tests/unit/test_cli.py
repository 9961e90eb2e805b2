"""The CLI against an in-process switch: a real control socket served by the real loop."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from scapy.layers.inet import IP, TCP

from pktswitch.cli import main
from pktswitch.control.daemon import handlers
from pktswitch.control.server import ControlServer
from pktswitch.core.switch import ServiceState, Switch
from pktswitch.io.loop import Loop
from pktswitch.sched.base import make
from pktswitch.sched.pool import BackendState

CONFIG = """\
[switch]
tun = "pkt0"
snat = ["203.0.113.1"]
control = "{sock}"

[[service]]
name = "web"
vip = "203.0.113.10:80"

[[service.backend]]
name = "A"
address = "192.0.2.1:80"
"""


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[str, Switch]]:
    """A switch with one SYN_RECV flow, its control socket served from a loop thread."""
    svc = ServiceState("web", "203.0.113.10", 80, make("rr"), [BackendState("A", "192.0.2.1", 80)])
    sw = Switch([svc], snat=["203.0.113.1"], seed=1)
    syn = bytes(IP(src="198.51.100.2", dst="203.0.113.10") / TCP(sport=40000, dport=80, flags="S"))
    sw.buf[: len(syn)] = syn
    assert sw.process(len(syn), 100.0)
    rfd, wfd = os.pipe()  # stands in for the TUN device: never readable
    loop = Loop(sw, rfd, clock=lambda: 105.0)
    path = str(tmp_path / "ctl.sock")
    server = ControlServer(path, handlers(sw, loop, clock=lambda: 105.0))
    server.attach(loop)
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    try:
        yield path, sw
    finally:
        loop.stop()
        t.join(5)
        server.close()
        os.close(rfd)
        os.close(wfd)


def test_flows_json_has_the_flow(running: tuple[str, Switch]) -> None:
    path, _ = running
    r = CliRunner().invoke(main, ["flows", "--json", "-s", path])
    assert r.exit_code == 0, r.output
    (flow,) = json.loads(r.output)
    assert flow == {
        "protocol": "tcp",
        "service": "web",
        "client": "198.51.100.2:40000",
        "vip": "203.0.113.10:80",
        "snat": "203.0.113.1:1024",
        "backend": "A",
        "backend_address": "192.0.2.1:80",
        "state": "SYN_RECV",
        "timeout": 60,
        "expires_in": 55.0,
        "age": 5.0,
        "packets_in": 1,
        "bytes_in": 40,
        "packets_out": 0,
        "bytes_out": 0,
        "reason": "rr: next in turn (1/1)",
    }


def test_flows_table(running: tuple[str, Switch]) -> None:
    path, _ = running
    r = CliRunner().invoke(main, ["flows", "-s", path])
    assert r.exit_code == 0, r.output
    header, row, footer = r.output.splitlines()
    assert header.split()[:7] == ["PROTO", "CLIENT", "VIP", "SNAT", "BACKEND", "NAME", "STATE"]
    assert row.split()[:9] == [
        "tcp",
        "198.51.100.2:40000",
        "203.0.113.10:80",
        "203.0.113.1:1024",
        "192.0.2.1:80",
        "A",
        "SYN_RECV",
        "55.0",
        "5.0",
    ]
    assert footer == "1 flow(s)"


def test_stats_json(running: tuple[str, Switch]) -> None:
    path, _ = running
    r = CliRunner().invoke(main, ["stats", "--json", "-s", path])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert (s["packets_in"], s["packets_forwarded"], s["flows"], s["flows_created"]) == (1, 1, 1, 1)


def test_bad_requests_get_an_error_and_the_server_keeps_serving(
    running: tuple[str, Switch],
) -> None:
    path, _ = running
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        f = s.makefile("rwb")
        for line, error in [
            (b"not json\n", "not JSON"),
            (b"[1,2]\n", "expected an object"),
            (b'{"cmd": "reboot"}\n', "unknown command 'reboot'"),
            (b'{"cmd": "flows", "args": 3}\n', '"args" must be an object'),
        ]:
            f.write(line)
            f.flush()
            reply = json.loads(f.readline())
            assert reply["ok"] is False and error in reply["error"]
        f.write(b'{"cmd": "ping"}\n')
        f.flush()
        assert json.loads(f.readline()) == {"ok": True, "result": "pong"}


def test_not_running_is_one_line_and_exit_3(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["flows", "-s", str(tmp_path / "none.sock")])
    assert r.exit_code == 3
    assert r.output.splitlines() == [
        f"pktswitch is not running (no answer on {tmp_path}/none.sock)"
    ]


def test_socket_path_is_read_from_the_config(tmp_path: Path, running: tuple[str, Switch]) -> None:
    path, _ = running
    cfg = tmp_path / "pks.toml"
    cfg.write_text(CONFIG.format(sock=path))
    r = CliRunner().invoke(main, ["flows", "--json", "-c", str(cfg)])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.output)) == 1


def test_check_good_and_bad_config(tmp_path: Path) -> None:
    cfg = tmp_path / "pks.toml"
    cfg.write_text(CONFIG.format(sock="/run/x.sock"))
    r = CliRunner().invoke(main, ["check", "-c", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "service web: tcp 203.0.113.10:80 rr -> A 192.0.2.1:80 w1" in r.output
    cfg.write_text(CONFIG.format(sock="/run/x.sock").replace("203.0.113.10:80", "203.0.113.10"))
    r = CliRunner().invoke(main, ["check", "-c", str(cfg)])
    assert r.exit_code == 2
    (line,) = r.output.splitlines()
    assert line.startswith(f"error: {cfg}: service[0].vip: ")


def test_second_server_on_a_live_socket_is_refused(running: tuple[str, Switch]) -> None:
    from pktswitch.control.server import AlreadyRunning

    path, _ = running
    with pytest.raises(AlreadyRunning):
        ControlServer(path, {})


def test_tcp_states_prints_the_table_the_code_runs_on(tmp_path: Path) -> None:
    cfg = tmp_path / "pks.toml"
    cfg.write_text(CONFIG.format(sock="/run/x.sock") + "\n[timeouts]\ntime_wait = 7\n")
    r = CliRunner().invoke(main, ["tcp-states", "-c", str(cfg)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    client = lines.index("from client:")
    assert lines[client + 2].split() == ["syn"] + ["sSR", "sES", "sES"] + ["sSR"] * 8
    assert "  sTW TIME_WAIT    7 s" in lines
    assert "  sES ESTABLISHED  900 s" in lines
