"""The SNAT pool's freed-pair ring against a deque model: least recently freed first, always."""

from __future__ import annotations

import random
from collections import deque

from pktswitch.core.nat import RING_MIN, SnatPool


def test_freed_pairs_come_back_oldest_first_through_every_growth_of_the_ring() -> None:
    size = 5 * RING_MIN
    pool = SnatPool(2, (1000, 1000 + size // 2 - 1), start=0)
    held = [pool.alloc("b", 0.0) for _ in range(size)]  # every fresh pair once
    assert None not in held and pool.alloc("b", 0.0) is None and pool.exhausted == 1
    model: deque[tuple[int, int]] = deque()
    rng = random.Random(7)
    grown = set()
    for step in range(60_000):
        now = step / 1000
        p_free = 0.6 if step < 20_000 else 0.45  # drift up until every pair is freed, then down
        if held and (rng.random() < p_free or not model):
            pair = held.pop(rng.randrange(len(held)))
            assert pair is not None
            pool.free("b", pair, now)
            model.append(pair)
        else:
            got = pool.alloc("b", now)
            assert got == model.popleft()
            held.append(got)
        count, cap = pool.freed("b")
        assert count == len(model)
        grown.add(cap)
    assert grown == {RING_MIN, 2 * RING_MIN, 4 * RING_MIN, size}
