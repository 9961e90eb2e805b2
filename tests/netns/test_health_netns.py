"""Failures on real backends: a dead one costs no new connection once detected.

Each test breaks backend B and mends it before it ends (the lab is shared by the session).
"""

from __future__ import annotations

import subprocess
import sys
import time

from netns_helpers import LAB_DIR, NETNS, Lab, hold_connections, wait_until
from switchlab import Switch, config_text

pytestmark = NETNS

URL = "http://203.0.113.10/"


def stream(lab: Lab, interval: float, duration: float) -> subprocess.Popen[bytes]:
    return lab.spawn(
        "cli", sys.executable, str(LAB_DIR / "reqstream.py"), lab.VIP, "80",
        str(interval), str(duration), "1",
    )  # fmt: skip


def stream_lines(
    lab: Lab, proc: subprocess.Popen[bytes], wait: bool = True
) -> list[tuple[float, str]]:
    """The stream's requests so far (`wait`: once it has ended)."""
    log = lab.log_path(proc)
    assert log is not None
    if wait:
        wait_until("the request stream to end", lambda: "done" in log.read_text().split("\n"), 30)
    out = []
    for line in log.read_text().splitlines():
        t, _, what = line.partition(" ")
        if line != "done" and what:  # (not a line still being written)
            out.append((float(t), what))
    return out


def backend_row(sw: Switch, name: str) -> dict:  # type: ignore[type-arg]
    return next(r for r in sw.stats_backends() if r["backend"] == name)


def test_active_check_takes_a_dead_backend_out_and_brings_it_back(lab: Lab) -> None:
    interval, fall, rise = 0.5, 2, 2
    check = {"check": "tcp", "interval": interval, "timeout": 0.4, "fall": fall, "rise": rise}
    cfg = config_text(lab, health={**check, "passive": False})
    with Switch(lab, cfg) as sw:
        proc = stream(lab, 0.05, 60)  # stopped below, once B answers again
        time.sleep(1)  # the stream runs against three healthy backends first
        lab.stop_http("b")
        killed = time.monotonic()  # (nginx has exited: its port refuses)
        wait_until("B down", lambda: backend_row(sw, "B")["health"] == "down", 5)
        detected = time.monotonic()
        assert detected - killed <= interval * fall + interval + 0.5, detected - killed
        time.sleep(2)
        restarted = time.monotonic()
        lab.start_http("b")
        wait_until("B up", lambda: backend_row(sw, "B")["health"] == "up", 5)
        back = time.monotonic()
        wait_until(  # traffic comes back
            "B answering again",
            lambda: any(
                w == "ok B" for t, w in stream_lines(lab, proc, wait=False) if t > back + 0.2
            ),
            10,
        )
        proc.terminate()
        lines = stream_lines(lab, proc)
        # from detection until B runs again: every request answered, none by B (after the
        # restart B may be declared up a poll before `back` and rightly answer)
        after = [what for t, what in lines if detected + 0.1 < t < restarted]
        assert after and all(w.startswith("ok ") for w in after), after
        assert "ok B" not in after
        row = backend_row(sw, "B")
        assert row["health_reason"] == f"up: {rise} checks passed"
        failed = [what for t, what in lines if what.startswith("fail")]
        print(f"requests {len(lines)}, failed {len(failed)}, detection {detected - killed:.2f} s")


def test_passive_signal_ejects_a_refusing_backend_before_the_active_check(lab: Lab) -> None:
    slow_check = {"check": "tcp", "interval": 10, "timeout": 1, "fall": 3, "eject": 30}
    with Switch(lab, config_text(lab, health=slow_check)) as sw:
        lab.stop_http("b")  # B's kernel now answers every SYN with RST
        try:
            got = [lab.exec("cli", "curl", "-s", "-m", "2", URL, check=False) for _ in range(9)]
            answers = [r.stdout.strip() or "fail" for r in got]
            assert answers.count("fail") == 1, answers  # the one SYN B refused
            assert "B" not in answers
            row = backend_row(sw, "B")
            assert (row["health"], row["health_reason"]) == (
                "ejected",
                "ejected for 30 s: RST in answer to a SYN, and the switch's check failed "
                "(Connection refused)",
            )
            assert sw.stats()["health_checks"]["failed"] < 3  # the active check has not decided
        finally:
            lab.start_http("b")


def test_passive_signals_need_no_health_table_and_the_switch_s_own_check(lab: Lab) -> None:
    """No [service.health]: passive signals are on. Backend A drops every SYN from the SNAT
    address (nftables in A's namespace), as a backend drops a SYN a client made bad on
    purpose, while the switch's own connects (from its address on the backend side) reach
    it: A's clients' SYNs go unanswered, and A stays in. B's web server stopped: its RST, and
    the switch's connect refused, eject B at once."""
    table = "pkspassive"
    lab.exec("a", "nft", "add", "table", "inet", table)
    try:
        hook = "{ type filter hook input priority 0 ; }"
        lab.exec("a", "nft", "add", "chain", "inet", table, "input", hook)
        drop = f"ip saddr {lab.SNAT} tcp dport 80 tcp flags syn drop"
        lab.exec("a", "nft", "add", "rule", "inet", table, "input", *drop.split())
        with Switch(lab, config_text(lab)) as sw:  # rr over A, B, C
            got = [lab.exec("cli", "curl", "-s", "-m", "2", URL, check=False) for _ in range(3)]
            assert [r.stdout.strip() for r in got] == ["", "B", "C"], got  # A's SYN dropped

            def told() -> dict[str, int]:
                return sw.stats()["passive_signals"]  # type: ignore[no-any-return]

            wait_until("A's signal contradicted", lambda: told()["unconfirmed"] >= 1, 10)
            assert told()["confirmed"] == 0
            assert backend_row(sw, "A")["health"] == "up"
            lab.stop_http("b")  # B's kernel now answers every SYN with RST
            got = [lab.exec("cli", "curl", "-s", "-m", "2", URL, check=False) for _ in range(3)]
            assert [r.stdout.strip() for r in got] == ["", "", "C"], got  # A dropped, B refused
            wait_until("B ejected", lambda: backend_row(sw, "B")["health"] == "ejected", 10)
            assert backend_row(sw, "B")["health_reason"] == (
                "ejected for 5 s: RST in answer to a SYN, and the switch's check failed "
                "(Connection refused)"
            )
            assert told()["confirmed"] == 1 and backend_row(sw, "A")["health"] == "up"
    finally:
        lab.start_http("b")
        lab.exec("a", "nft", "delete", "table", "inet", table, check=False)


def test_reset_policy_resets_the_clients_of_a_dead_backend(lab: Lab) -> None:
    check = {"check": "tcp", "interval": 0.5, "timeout": 0.4, "fall": 2, "on_down": "reset"}
    with Switch(lab, config_text(lab, health={**check, "passive": False})) as sw:
        cmd = ["ip", "netns", "exec", lab.ns["cli"], sys.executable]
        clients = []
        for _ in range(3):  # rr: A, B, C
            p = subprocess.Popen(
                [*cmd, str(LAB_DIR / "keepalive_client.py"), lab.VIP, "80"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert p.stdin and p.stdout
            p.stdout.readline()  # local address
            p.stdin.write("\n")
            p.stdin.flush()
            clients.append((p, p.stdout.readline().split()[1]))
        ((client_b, _),) = [(p, name) for p, name in clients if name == "B"]
        try:
            lab.exec("b", "ip", "link", "set", "eth0", "down")  # dead: no answer at all
            died = time.monotonic()
            client_b.stdin.write("\n")  # type: ignore[union-attr]
            client_b.stdin.flush()  # type: ignore[union-attr]
            line = client_b.stdout.readline().split()  # type: ignore[union-attr]
            assert line[0] == "reset", line
            assert float(line[1]) - died < 0.5 * 2 + 0.5 + 1, line
            assert sw.stats()["flows_reset"] == 1
            for p, name in clients:
                if name != "B":  # the others are untouched
                    p.stdin.write("\n")  # type: ignore[union-attr]
                    p.stdin.flush()  # type: ignore[union-attr]
                    assert p.stdout.readline().split() == ["answer", name]  # type: ignore[union-attr]
        finally:
            lab.exec("b", "ip", "link", "set", "eth0", "up")
            lab.exec("b", "ip", "route", "replace", "default", "via", lab.LB_BACKEND_IP)
            # the switch's RST to B left while B's link was down: B still holds that
            # connection, which a later switch's SYN from the same SNAT pair would meet
            lab.exec("b", "ss", "-K", "-tn", "state", "established")
            for p, _ in clients:
                p.kill()
                p.wait(5)
            lab.wait_tcp("cli", lab.BACKENDS["B"], 80)


def test_drain_keeps_held_flows_and_takes_no_new_ones(lab: Lab) -> None:
    with Switch(lab, config_text(lab, timeouts={"time_wait": 1, "close": 1})) as sw:
        holder, lines = hold_connections(lab, 3)
        assert [line.split(" -> ")[1] for line in lines] == ["A", "B", "C"]
        r = sw.cli("backend", "set", "web/B", "--drain")
        assert r.stdout.strip() == "web/B: draining, 1 flow(s) on it"
        answers = [lab.curl(URL).strip() for _ in range(20)]
        assert set(answers) == {"A", "C"}, answers
        row = backend_row(sw, "B")
        assert (row["health"], row["active"]) == ("draining", 1)
        lab.stop(holder)  # the held flows end; B empties once their TIME_WAIT is over
        log = sw.log
        wait_until("the drained log line", lambda: "web/B: drained, no flow left" in log(), 10)
