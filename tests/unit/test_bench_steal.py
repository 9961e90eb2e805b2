"""netns-lab/steal.py: steal from two /proc/stat readings, samples kept and dropped, ratios
paired by round. Pure arithmetic: no root, no lab."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "netns-lab"))

from steal import busy_ticks, cpu_ticks, kept, pair_ratios, sample, spread, steal_pct

# user nice system idle iowait irq softirq steal guest guest_nice
BEFORE = """cpu  100 0 50 800 10 0 10 30 0 0
cpu0 60 0 30 400 5 0 5 15 0 0
intr 12345
"""
AFTER = """cpu  200 0 100 1400 10 0 20 70 5 0
cpu0 99 0 99 999 9 0 9 99 0 0
"""


def test_cpu_ticks_reads_the_aggregate_line() -> None:
    assert cpu_ticks(BEFORE) == (100, 0, 50, 800, 10, 0, 10, 30, 0, 0)


def test_cpu_ticks_pads_columns_an_old_kernel_lacks() -> None:
    assert cpu_ticks("cpu 1 2 3 4 5 6 7\n") == (1, 2, 3, 4, 5, 6, 7, 0, 0, 0)


def test_cpu_ticks_without_cpu_line() -> None:
    with pytest.raises(ValueError, match="cpu"):
        cpu_ticks("cpu0 1 2 3 4\nintr 5\n")


def test_busy_ticks_leave_out_idle_iowait_steal_guest() -> None:
    assert busy_ticks(cpu_ticks(BEFORE)) == 100 + 0 + 50 + 0 + 10
    assert busy_ticks(cpu_ticks(AFTER)) == 200 + 0 + 100 + 0 + 20


@pytest.mark.parametrize(
    ("before", "after", "pct"),
    [
        # d: user 100, system 50, idle 600, softirq 10, steal 40 = 800 ticks; guest 5 is in
        # user already and not counted twice
        (BEFORE, AFTER, 5.0),
        ("cpu 0 0 0 0 0 0 0 0\n", "cpu 10 0 10 0 0 0 0 80\n", 80.0),
        ("cpu 0 0 0 100 0 0 0 7\n", "cpu 0 0 0 200 0 0 0 7\n", 0.0),
        ("cpu 5 0 0 5 0 0 0 5\n", "cpu 5 0 0 5 0 0 0 5\n", 0.0),  # no tick passed
    ],
)
def test_steal_pct(before: str, after: str, pct: float) -> None:
    assert steal_pct(cpu_ticks(before), cpu_ticks(after)) == pct


ROWS = [  # a variant's rounds
    {"conn_rps": 3.0, "ka_rps": 10.0},
    {"conn_rps": 6.0, "ka_rps": 20.0},
    {"conn_rps": 5.0, "ka_rps": 30.0},
    {"conn_rps": 1.0, "conn_dropped": 1, "ka_rps": 40.0},  # conn dropped: steal after retries
]
REF = [  # the reference's rounds, each a neighbour in time of ROWS's same round
    {"conn_rps": 6.0, "ka_rps": 40.0},
    {"conn_rps": 8.0, "ka_dropped": 1, "ka_rps": 1.0},
    {"conn_rps": 4.0},  # ka missing (a failed run)
    {"conn_rps": 2.0, "ka_rps": 0.0},
]


def test_sample_skips_the_dropped_load_only() -> None:
    assert sample(ROWS[3], "conn_rps") is None
    assert sample(ROWS[3], "ka_rps") == 40.0
    assert sample(REF[2], "ka_rps") is None


def test_kept() -> None:
    assert kept(ROWS, "conn_rps") == [3.0, 6.0, 5.0]
    assert kept(REF, "ka_rps") == [40.0, 0.0]


def test_pair_ratios_by_round() -> None:
    # 3/6, 6/8, 5/4; round 4's pktswitch sample was dropped
    assert pair_ratios(ROWS, REF, "conn_rps") == [0.5, 0.75, 1.25]
    # round 1 only: round 2's reference dropped, round 3's missing, round 4's is 0
    assert pair_ratios(ROWS, REF, "ka_rps") == [0.25]


def test_spread() -> None:
    assert spread([0.5, 0.75, 1.25]) == (0.75, 0.5, 1.25)
    assert spread([1.25, 0.5]) == (0.875, 0.5, 1.25)
    assert spread([]) is None
