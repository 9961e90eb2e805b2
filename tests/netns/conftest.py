"""The netns lab, built once per test session and removed at its end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from netns_helpers import Lab, lab_names_in_use, netns_missing


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    reason = netns_missing()
    if reason is not None:
        pytest.skip(f"netns: {reason}")
    before = set(lab_names_in_use())
    with Lab() as lab:
        yield lab
    assert set(lab_names_in_use()) == before, "the lab left namespaces behind"
