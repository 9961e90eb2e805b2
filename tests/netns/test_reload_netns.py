"""Reload on real traffic: long-lived connections keep their backends and lose nothing while a
reload (SIGHUP, then `pktswitch reload`) adds a backend, changes weights and removes one."""

from __future__ import annotations

import collections
import signal

from netns_helpers import NETNS, Lab, kaload_result, start_kaload, wait_until
from switchlab import Switch, config_text

pytestmark = NETNS


def test_reload_keeps_established_connections_and_applies_the_new_backends(lab: Lab) -> None:
    with Switch(lab, config_text(lab, scheduler="wrr", web_backends="AB")) as sw:
        # runs until the test is done (60 s at most), however long the steps below take
        load = start_kaload(lab, conns=4, seconds=60, interval=0.02)
        held = wait_until(
            "4 established flows",
            lambda: len(rows := sw.flows(service="web", state="ESTABLISHED")) == 4 and rows,
        )
        before = {r["client"]: r["backend"] for r in held}
        assert sorted(before.values()) == ["A", "A", "B", "B"]

        # SIGHUP: C added, B weighs 2
        sw.config_path.write_text(
            config_text(lab, scheduler="wrr", web_backends="ABC", weights={"B": 2})
        )
        assert sw.proc is not None
        sw.proc.send_signal(signal.SIGHUP)
        wait_until("the reload", lambda: sw.stats()["reloads"]["applied"] == 1, timeout=5)
        answers = [lab.curl(f"http://{lab.VIP}/").strip() for _ in range(40)]
        why = (answers, sw.stats(), sw.flows())  # on failure: what the switch saw
        assert collections.Counter(answers) == {"A": 10, "B": 20, "C": 10}, why

        # `pktswitch reload` with a broken file: refused, nothing changes
        sw.config_path.write_text(sw.config_path.read_text().replace("weight = 2", "weight = -2"))
        res = sw.cli("reload", check=False)
        assert res.returncode == 1
        assert res.stderr.startswith("error: reload: refused, the running config stays: ")
        assert "service[0].backend[1].weight: an integer 0..65535, got -2" in res.stderr

        # `pktswitch reload`: A removed; its established flows stay until they end
        sw.config_path.write_text(
            config_text(lab, scheduler="wrr", web_backends="BC", weights={"B": 2})
        )
        res = sw.cli("reload")
        assert "web/A: removed; its flows stay until they end (2 established, " in res.stdout
        answers = [lab.curl(f"http://{lab.VIP}/").strip() for _ in range(30)]
        why = (answers, sw.stats(), sw.flows())
        assert collections.Counter(answers) == {"B": 20, "C": 10}, why
        after = {r["client"]: r["backend"] for r in sw.flows(service="web", state="ESTABLISHED")}
        assert {c: after.get(c) for c in before} == before

        result = kaload_result(lab, load, stop=True)
        assert result["lost"] == []
        assert set(result["backends"]) == {"A", "B"}  # each connection stayed where it was
        # no whole second without an answer (a fast machine may finish the steps in less
        # than one: then the requests made are what shows the load went on)
        assert result["requests"] >= 4 and all(result["per_second"]), result
        s = sw.stats()
        assert s["reloads"] == {"applied": 2, "refused": 1}
        assert sw.stop() == 0
        assert sw.leftovers() == []
