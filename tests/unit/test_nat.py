"""The SNAT pool's freed-pair ring against a deque model: least recently freed first, always."""

from __future__ import annotations

import random
from collections import deque

from pktswitch._native import ffi

from pktswitch.core.nat import BACKEND_TIME_WAIT, RING_MIN, SnatPool


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


def test_a_queue_is_dropped_only_when_its_pairs_are_neither_in_use_nor_in_time_wait() -> None:
    pool = SnatPool(1, (1000, 1009), start=0)
    pair = pool.alloc("b", 0.0)
    assert pair == (0, 1000) and pool.queues == 1
    assert not pool.drop("b", 100.0)  # a pair in use
    pool.free("b", pair, 100.0)
    assert not pool.drop("b", 100.0 + BACKEND_TIME_WAIT - 0.1)  # its TIME_WAIT at the backend
    assert pool.in_use("b") == 0 and pool.freed("b") == (1, 10)  # (a ring of the whole pool)
    assert pool.drop("b", 100.0 + BACKEND_TIME_WAIT)
    assert pool.queues == 0 and pool.freed("b") == (0, 0) and pool.drop("b", 0.0)
    assert pool.ptr.q[0].live == 0 and pool.ptr.q[0].pairs == ffi.NULL  # its memory went
    # the number goes to the next new endpoint, whose queue starts afresh
    assert pool.alloc("c", 200.0) == (0, 1000) and pool.endpoint("c") == 0
    assert pool.endpoint("d") == 1 and pool.queues == 2
