"""Every switch a unit test builds is held, at the test's end, to C opening its flows: what it
handed Python is only what it hands by design (core/packet.py, BY_DESIGN). And no health
check or probe of a unit test connects anywhere: a test that runs them stubs the connect."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

from pktswitch.core import packet
from pktswitch.core.switch import Switch

# property tests are held to their examples, never to the clock: on a loaded machine one
# example may take longer than hypothesis's default 200 ms deadline
settings.register_profile("pktswitch", deadline=None)
settings.load_profile("pktswitch")


@pytest.fixture(autouse=True)
def no_connects_from_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    from pktswitch.control import health_checks, probes

    def refuse(ip: str, port: int) -> Any:
        raise RuntimeError(f"a unit test's check or probe connected to {ip}:{port}: stub it")

    monkeypatch.setattr(health_checks, "connect_nonblocking", refuse)
    monkeypatch.setattr(probes, "connect_nonblocking", refuse)


@pytest.fixture(autouse=True)
def c_opens_every_flow(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    built: list[weakref.ref[Switch]] = []
    init = Switch.__init__

    def tracked(self: Switch, *args: Any, **kw: Any) -> None:
        init(self, *args, **kw)
        built.append(weakref.ref(self))

    monkeypatch.setattr(Switch, "__init__", tracked)
    yield
    for ref in built:
        sw = ref()
        if sw is not None:
            handed = {k: n for k, n in sw.stats(0.0)["to_python"].items() if n}
            assert set(handed) <= packet.BY_DESIGN, f"C handed Python {handed}"
