"""The CLI against an in-process switch: a real control socket served by the real loop."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from scapy.layers.inet import IP, TCP

from pktswitch.cli import main
from pktswitch.control.daemon import handlers
from pktswitch.control.server import MAX_PENDING, ControlServer
from pktswitch.core.switch import ServiceState, Switch
from pktswitch.io.loop import Loop
from pktswitch.sched.pool import BackendState
from pktswitch.sched.registry import make

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


class Running:
    """A switch served by the real loop in a thread, with a datagram socket pair standing in
    for the TUN device: one datagram is one packet, as on a TUN device."""

    def __init__(self, tmp_path: Path) -> None:
        backends = [BackendState(n, f"192.0.2.{i}", 80) for i, n in enumerate("ABC", 1)]
        svc = ServiceState("web", "203.0.113.10", 80, make("rr"), backends)
        self.sw = Switch([svc], snat=["203.0.113.1"], seed=1, snat_start=0)
        syn = bytes(
            IP(src="198.51.100.2", dst="203.0.113.10") / TCP(sport=40000, dport=80, flags="S")
        )
        self.sw.buf[: len(syn)] = syn
        assert self.sw.process(len(syn), 100.0)
        self.tun, self.wire = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.tun.setblocking(False)
        self.wire.settimeout(5)
        self.loop = Loop(self.sw, self.tun.fileno(), clock=lambda: 105.0)
        self.path = str(tmp_path / "ctl.sock")
        self.server = ControlServer(self.path, handlers(self.sw, self.loop, clock=lambda: 105.0))
        self.server.attach(self.loop)
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def send(self, pkt: IP, reply: bool = True) -> bytes:
        """Put a packet on the fake TUN device; return what the switch writes back."""
        self.wire.send(bytes(pkt))
        return self.wire.recv(65535) if reply else b""

    def close(self) -> None:
        self.loop.stop()
        self.thread.join(5)
        self.server.close()
        self.tun.close()
        self.wire.close()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[str, Switch]]:
    """A switch with one SYN_RECV flow, its control socket served from a loop thread."""
    r = Running(tmp_path)
    try:
        yield r.path, r.sw
    finally:
        r.close()


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
        "reason": "rr: next in turn (1/3)",
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


def connected(path: str, timeout: float) -> socket.socket:
    """A raw client of the control socket at path."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(path)
    return s


def test_bad_requests_get_an_error_and_the_server_keeps_serving(
    running: tuple[str, Switch],
) -> None:
    path, _ = running
    with connected(path, 5) as s:
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


def test_a_client_sending_far_ahead_of_the_answers_is_dropped(
    running: tuple[str, Switch],
) -> None:
    path, _ = running
    with connected(path, 10) as s:
        s.sendall(b'{"cmd": "trace"}\n')  # a stream that stays open: no answer for a while
        line = b'{"cmd": "ping"}' + b" " * 1000 + b"\n"
        sent, closed = 0, False
        while sent <= MAX_PENDING + len(line) and not closed:
            try:
                s.sendall(line)
                sent += len(line)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        assert sent > MAX_PENDING or closed
        got = b""
        try:
            s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(65536):  # the server closes: b"" within the timeout, or
                got += chunk
        except (ConnectionResetError, BrokenPipeError):  # a reset (it left requests unread)
            pass
        assert b"pong" not in got  # none of the requests it held was answered


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


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_a_control_directory_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    d = tmp_path / "ctl"
    d.mkdir()
    d.chmod(mode)
    with pytest.raises(PermissionError, match=f"writable by others \\(mode {mode:04o}\\)"):
        ControlServer(str(d / "s.sock"), {})
    assert list(d.iterdir()) == []  # nothing made there
    d.chmod(0o755)
    ControlServer(str(d / "s.sock"), {}).close()


def test_a_control_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root, to give a directory to another user")
    d = tmp_path / "ctl"
    d.mkdir(mode=0o755)
    os.chown(d, 65534, 65534)
    with pytest.raises(PermissionError, match="belongs to uid 65534"):
        ControlServer(str(d / "s.sock"), {})


def test_second_server_on_a_live_socket_is_refused(running: tuple[str, Switch]) -> None:
    from pktswitch.control.server import AlreadyRunning

    path, _ = running
    with pytest.raises(AlreadyRunning):
        ControlServer(path, {})


def test_a_socket_whose_switch_is_too_busy_to_answer_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live switch with a full backlog makes the probe time out: its socket must stay (only
    a refused connection, nobody listening, makes a socket stale)."""
    import socket

    from pktswitch.control import server
    from pktswitch.control.server import AlreadyRunning

    path = str(tmp_path / "busy.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    class Slow(socket.socket):
        def connect(self, address: object) -> None:
            raise TimeoutError("timed out")

    monkeypatch.setattr(server.socket, "socket", Slow)
    try:
        with pytest.raises(AlreadyRunning, match="may be running"):
            server._prepare_path(path)
        assert os.path.exists(path)
    finally:
        listener.close()
    monkeypatch.undo()
    server._prepare_path(path)  # now nobody listens: stale, removed
    assert not os.path.exists(path)


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


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Running]:
    r = Running(tmp_path)
    try:
        yield r
    finally:
        r.close()


def client_syn(sport: int) -> IP:
    return IP(src="198.51.100.2", dst="203.0.113.10") / TCP(sport=sport, dport=80, flags="S")


def test_flows_filters(live: Running) -> None:
    for sport in (40001, 40002, 40003):
        live.send(client_syn(sport))  # to B, C, A
    run = CliRunner().invoke

    def clients(*args: str) -> list[str]:
        r = run(main, ["flows", "--json", "-s", live.path, *args])
        assert r.exit_code == 0, r.output
        return [row["client"].split(":")[1] for row in json.loads(r.output)]

    assert clients() == ["40000", "40001", "40002", "40003"]  # oldest first
    assert clients("--backend", "A") == ["40000", "40003"]
    assert clients("--state", "syn_recv", "--limit", "2") == ["40000", "40001"]
    assert clients("--state", "ESTABLISHED") == []
    assert clients("--service", "nope") == []


def test_backends_table_and_json(live: Running) -> None:
    syn = live.send(client_syn(40001))  # to B
    out = IP(syn)
    synack = IP(src=out.dst, dst=out.src) / TCP(sport=80, dport=out[TCP].sport, flags="SA")
    live.send(synack)
    r = CliRunner().invoke(main, ["backends", "--json", "-s", live.path])
    assert r.exit_code == 0, r.output
    rows = {row["backend"]: row for row in json.loads(r.output)}
    # handshakes not finished: inactive (IPVS InActConn), not active
    assert [rows[n]["inactive"] for n in "ABC"] == [1, 1, 0]
    assert [rows[n]["active"] for n in "ABC"] == [0, 0, 0]
    assert rows["B"]["address"] == "192.0.2.2:80" and rows["B"]["weight"] == 1
    assert (rows["B"]["bytes_in"], rows["B"]["bytes_out"]) == (40, 40)
    assert rows["B"]["samples"] == {"syn": 1, "data": 0, "probe": 0}
    assert rows["B"]["rtt_syn_ms"] == 0.0  # the fake clock stands still
    assert rows["A"]["rtt_syn_ms"] is None and rows["A"]["rt_data_ms"] is None
    r = CliRunner().invoke(main, ["backends", "-s", live.path])
    assert r.output.splitlines()[0].split() == [
        "SERVICE", "NAME", "ADDRESS", "WEIGHT", "HEALTH", "ACTIVE", "INACTIVE", "TOTAL", "BYTES>",
        "<BYTES",
        "HANDSHAKE(ms)", "RESPONSE(ms)", "WHY",
    ]  # fmt: skip


def _send_when_traced(live: Running, pkts: list[IP], dropped: int = -1) -> threading.Thread:
    """Send pkts once a trace has subscribed; the one at index `dropped` gets no reply."""

    def go() -> None:
        deadline = time.monotonic() + 5
        while not live.sw.subscriptions and time.monotonic() < deadline:
            time.sleep(0.005)
        for i, p in enumerate(pkts):
            live.send(p, reply=i != dropped)

    t = threading.Thread(target=go)
    t.start()
    return t


def test_trace_shows_the_syn_rewrite_and_writes_a_pcap(live: Running, tmp_path: Path) -> None:
    from scapy.utils import rdpcap

    pcap = tmp_path / "t.pcap"
    sender = _send_when_traced(live, [client_syn(40001), client_syn(40001)])
    r = CliRunner().invoke(main, ["trace", "--count", "2", "--pcap", str(pcap), "-s", live.path])
    sender.join(5)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].endswith("fast NONE -> SYN_RECV  web/B flow 198.51.100.2:40001")
    ins, outs = lines[1].split(), lines[2].split()
    assert ins[:5] == ["in", "198.51.100.2:40001", ">", "203.0.113.10:80", "[S]"]
    assert outs[:5] == ["out", "203.0.113.1*:1024*", ">", "192.0.2.2*:80", "[S]"]
    assert lines[3].endswith("fast  web/B flow 198.51.100.2:40001")  # retransmit: no change
    assert lines[-1] == "2 packet(s) traced, 0 lost to a full trace buffer"
    # the checksums shown are the packet's, and scapy agrees with them
    pkts = rdpcap(str(pcap))
    assert len(pkts) == 4
    before, after = IP(bytes(pkts[0])), IP(bytes(pkts[1]))
    assert bytes(before) == bytes(client_syn(40001))
    fresh = after.copy()
    del fresh.chksum
    del fresh[TCP].chksum
    fresh = IP(bytes(fresh))
    assert (fresh.chksum, fresh[TCP].chksum) == (after.chksum, after[TCP].chksum)
    assert ins[5:] == ["ip", f"{before.chksum:#06x}", "tcp", f"{before[TCP].chksum:#06x}"]
    assert outs[5:] == ["ip", f"{after.chksum:#06x}*", "tcp", f"{after[TCP].chksum:#06x}*"]
    assert (after.src, after[TCP].sport, after.dst) == ("203.0.113.1", 1024, "192.0.2.2")


def test_trace_follows_one_flow_and_counts_drops_as_drops(live: Running) -> None:
    other = client_syn(40007)
    junk = IP(src="198.51.100.2", dst="203.0.113.10") / TCP(sport=40009, dport=80, flags="A")
    mine = client_syn(40009)
    sender = _send_when_traced(live, [other, junk, mine], dropped=1)
    r = CliRunner().invoke(
        main, ["trace", "--json", "--count", "2", "--flow", "198.51.100.2:40009", "-s", live.path]
    )
    sender.join(5)
    assert r.exit_code == 0, r.output
    evs = [json.loads(line) for line in r.output.splitlines()]
    assert [e["verdict"] for e in evs] == ["drop:no_flow", "fast"]
    assert evs[0]["after"] is None and evs[0]["flow"] is None
    assert evs[1]["changed"] == ["src", "sport", "dst", "ip_csum", "tcp_csum"]
    assert live.sw.subscriptions == []  # the trace unsubscribed when it ended


def test_trace_argument_errors(live: Running) -> None:
    r = CliRunner().invoke(main, ["trace", "--flow", "nonsense", "-s", live.path])
    assert r.exit_code == 1
    assert r.output.strip() == (
        "error: trace: flow must be CLIENT_IP:PORT like 198.51.100.2:40312, got 'nonsense'"
    )


def test_which_says_where_a_new_flow_would_go_without_changing_it(live: Running) -> None:
    run = CliRunner().invoke
    for _ in range(2):
        r = run(main, ["which", "--service", "web", "198.51.100.9:5000", "-s", live.path])
        assert r.exit_code == 0, r.output
        assert r.output.strip() == "198.51.100.9:5000 -> B 192.0.2.2:80  (rr: next in turn (2/3))"
    assert IP(live.send(client_syn(40001))).dst == "192.0.2.2"  # and so it does
    r = run(main, ["which", "--service", "nope", "198.51.100.9", "-s", live.path])
    assert r.exit_code == 1
    assert r.output.strip() == "error: which: no service named 'nope' (services: web)"


def test_backend_weight_changes_new_flows_only(live: Running) -> None:
    run = CliRunner().invoke
    r = run(main, ["backend", "set", "web/B", "--weight", "0", "-s", live.path])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == "web/B: weight 1 -> 0"
    dsts = [IP(live.send(client_syn(41000 + i))).dst for i in range(4)]
    assert dsts == ["192.0.2.3", "192.0.2.1", "192.0.2.3", "192.0.2.1"]  # B is skipped
    flows = json.loads(run(main, ["flows", "--json", "-s", live.path]).output)
    assert flows[0]["backend"] == "A"  # the flow that was there before stays
    r = run(main, ["backend", "set", "web/Z", "--weight", "1", "-s", live.path])
    assert r.exit_code == 1 and "has no backend 'Z' (backends: A, B, C)" in r.output
