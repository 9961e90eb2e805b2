"""The arithmetic bench.py uses against a noisy host: CPU time from /proc/stat, the share a
hypervisor stole, and ratios between variants taken pair by pair. No I/O: bench.py reads the
files and hands the text in, so tests/unit/test_bench_steal.py runs these without root.

A shared machine's hypervisor runs other guests on this one's CPUs; the ticks it took count in
the `steal` column of /proc/stat. Within a single load it took up to 83 % of the CPU, and nft
NAT's conn/s went from 2.5 k to 14.1 k between rounds of one run, so bench.py measures steal
per load, repeats a load that was stolen from and leaves one that stays so out of the medians,
and compares variants only by neighbouring samples: a ratio is the median of ratios of pairs
taken in the same round, one slice after the other.

A row is one variant's round: {"<load>_<metric>": value}, with "<load>_dropped" set when that
load's sample is out of the medians.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

# /proc/stat's `cpu` columns (proc(5)); guest and guest_nice are already in user and nice
COLUMNS = (
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice",
)  # fmt: skip
STEAL = COLUMNS.index("steal")
TIME_COLUMNS = STEAL + 1  # user..steal: every tick once (guest time is counted in user/nice)
BUSY = ("user", "nice", "system", "irq", "softirq")


def cpu_ticks(proc_stat: str) -> tuple[int, ...]:
    """The aggregate `cpu` line of /proc/stat as ticks, one per name of COLUMNS (zero for the
    columns an older kernel does not print)."""
    for line in proc_stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(f) for f in fields[1 : 1 + len(COLUMNS)]]
            return tuple(ticks + [0] * (len(COLUMNS) - len(ticks)))
    raise ValueError("no aggregate `cpu` line in /proc/stat")


def busy_ticks(ticks: Sequence[int]) -> int:
    """Ticks all CPUs spent running something: user, nice, system, irq, softirq; not idle,
    I/O wait, a hypervisor's steal, or guest time (already in user)."""
    return sum(ticks[COLUMNS.index(c)] for c in BUSY)


def steal_pct(before: Sequence[int], after: Sequence[int]) -> float:
    """The hypervisor's share of the CPU time between two readings of cpu_ticks, in %:
    d(steal) / d(user..steal). 0 when no tick passed."""
    d = [a - b for a, b in zip(after[:TIME_COLUMNS], before[:TIME_COLUMNS], strict=True)]
    total = sum(d)
    return 100 * d[STEAL] / total if total > 0 else 0.0


def sample(row: dict[str, float | None], key: str) -> float | None:
    """The value of `key` ("conn_rps") in one row, None when missing or when its load ("conn")
    was dropped."""
    load = key.split("_", 1)[0]
    if row.get(f"{load}_dropped"):
        return None
    return row.get(key)


def kept(rows: Sequence[dict[str, float | None]], key: str) -> list[float]:
    """The values of `key` over the rounds, the dropped and missing ones left out."""
    return [v for v in (sample(r, key) for r in rows) if v is not None]


def pair_ratios(
    rows: Sequence[dict[str, float | None]], ref_rows: Sequence[dict[str, float | None]], key: str
) -> list[float]:
    """value / reference value for `key`, round by round (the two samples are neighbours in
    time); a round where either is dropped or missing, or the reference is 0, has no pair."""
    ratios = []
    for row, ref in zip(rows, ref_rows, strict=False):
        a, b = sample(row, key), sample(ref, key)
        if a is not None and b:
            ratios.append(a / b)
    return ratios


def spread(values: Sequence[float]) -> tuple[float, float, float] | None:
    """(median, min, max) of the values; None when there are none."""
    if not values:
        return None
    return statistics.median(values), min(values), max(values)
