"""Shared test settings.

Under PKS_REQUIRE_ALL=1 (set by .ci/run, which runs as root) a skipped test is a failed test:
a netns test that skips proves nothing, so CI must not pass because the lab could not be built.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ALL = os.environ.get("PKS_REQUIRE_ALL") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    if REQUIRE_ALL and rep.skipped:
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"skipped under PKS_REQUIRE_ALL=1, which forbids skips: {reason}"
