"""The schedulers: exact counts and orders, golden Maglev tables, disruption, peek == pick."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest

from pktswitch.sched import maglev
from pktswitch.sched.base import Picked, Scheduler
from pktswitch.sched.pool import BackendState
from pktswitch.sched.registry import SCHEDULERS, make

CLIENT = bytes([198, 51, 100, 2])
ALL = sorted(SCHEDULERS)


def backends(*weights: int, names: str = "ABCDEFGH") -> list[BackendState]:
    return [BackendState(names[i], f"192.0.2.{i + 1}", 80, w) for i, w in enumerate(weights)]


def client(i: int) -> bytes:
    """The i-th of many distinct client addresses: 10.1.x.y."""
    return bytes([10, 1, i // 256, i % 256])


def pick(s: Scheduler, bs: Sequence[BackendState], c: bytes = CLIENT, port: int = 1) -> Picked:
    picked = s.pick(bs, c, port)
    assert picked is not None
    return picked


def picks(s: Scheduler, bs: Sequence[BackendState], n: int, cport: int = 40000) -> list[str]:
    out = []
    for i in range(n):
        picked = s.pick(bs, client(i), cport)
        assert picked is not None
        out.append(picked[0].name)
    return out


def names(s: Scheduler, bs: Sequence[BackendState]) -> str:
    """The backend each of 300 distinct clients gets, as one string: a table's fingerprint."""
    return "".join(picks(s, bs, 300))


# ---------------------------------------------------------------------- rr
def test_rr_takes_turns_in_list_order() -> None:
    s, bs = make("rr"), backends(1, 1, 1)
    assert "".join(picks(s, bs, 30)) == "ABC" * 10
    assert s.pick(bs, CLIENT, 1) == (bs[0], "rr: next in turn (1/3)")
    assert s.pick(bs, CLIENT, 1) == (bs[1], "rr: next in turn (2/3)")


def test_rr_skips_weight_0() -> None:
    s, bs = make("rr"), backends(1, 0, 1)
    assert "".join(picks(s, bs, 6)) == "ACACAC"
    assert s.pick(bs, CLIENT, 1) == (bs[0], "rr: next in turn (1/3)")
    assert s.pick(bs, CLIENT, 1) == (bs[2], "rr: next in turn (3/3)")


# ---------------------------------------------------------------------- wrr
def test_wrr_is_smooth_and_exact() -> None:
    s, bs = make("wrr"), backends(2, 3, 5)
    seq = picks(s, bs, 100)
    assert "".join(seq[:10]) == "CBACBCCABC"  # nginx's smooth order, not AABBBCCCCC
    for start in range(0, 100, 10):  # every period of sum(weights) picks is exact
        assert Counter(seq[start : start + 10]) == {"A": 2, "B": 3, "C": 5}
    assert Counter(seq) == {"A": 20, "B": 30, "C": 50}


def test_wrr_reason() -> None:
    s, bs = make("wrr"), backends(2, 3, 5)
    assert s.pick(bs, CLIENT, 1) == (bs[2], "wrr: C current 5 of total 10")
    assert s.pick(bs, CLIENT, 1) == (bs[1], "wrr: B current 6 of total 10")
    assert s.pick(bs, CLIENT, 1) == (bs[0], "wrr: A current 6 of total 10")


@pytest.mark.parametrize("tell", [False, True], ids=["noticed", "update"])
def test_wrr_follows_a_weight_change(tell: bool) -> None:
    s, bs = make("wrr"), backends(2, 3, 5)
    picks(s, bs, 7)  # mid-period
    bs[0].weight, bs[1].weight, bs[2].weight = 1, 0, 3
    if tell:
        s.update(bs)
    seq = picks(s, bs, 100)
    assert "".join(seq[:4]) == "CACC"
    for start in range(0, 100, 4):
        assert Counter(seq[start : start + 4]) == {"A": 1, "C": 3}


def test_wrr_takes_a_new_backend_in() -> None:
    s, bs = make("wrr"), backends(1, 1)
    picks(s, bs, 3)
    bs.append(BackendState("C", "192.0.2.3", 80, 2))
    assert Counter(picks(s, bs, 40)) == {"A": 10, "B": 10, "C": 20}


# ---------------------------------------------------------------------- iphash
def test_iphash_is_stable_per_client() -> None:
    s, bs = make("iphash"), backends(1, 1, 1)
    first = s.pick(bs, CLIENT, 40000)
    assert first is not None
    for port in range(40001, 40050):  # another connection of the same client
        assert s.pick(bs, CLIENT, port) == first
    # a deterministic hash: a new scheduler (a restart, another switch) agrees
    assert pick(make("iphash"), backends(1, 1, 1))[0].name == first[0].name
    assert names(make("iphash"), backends(1, 1, 1)) == names(s, bs)


def test_iphash_reason() -> None:
    s, bs = make("iphash"), backends(1, 1, 1)
    b, reason = pick(s, bs, CLIENT, 40000)
    bucket = int(reason.split("bucket ")[1].split()[0])
    assert 0 <= bucket < 256
    assert reason == f"iphash: hash(198.51.100.2) -> bucket {bucket} -> {b.name}"
    assert s.slots(bs)[bucket] == b.name
    s = make("iphash", hash_key="ip+port")
    b, reason = pick(s, bs, CLIENT, 40000)
    assert reason.startswith("iphash: hash(198.51.100.2:40000) -> bucket ")


def test_iphash_spreads_clients() -> None:
    counts = Counter(picks(make("iphash"), backends(1, 1, 1), 300))
    assert set(counts) == {"A", "B", "C"}
    assert all(80 <= c <= 120 for c in counts.values()), counts


def test_iphash_ip_port_spreads_one_clients_ports() -> None:
    bs = backends(1, 1, 1)
    s = make("iphash")
    assert len({pick(s, bs, CLIENT, p)[0].name for p in range(300)}) == 1
    s = make("iphash", hash_key="ip+port")
    counts = Counter(pick(s, bs, CLIENT, 40000 + p)[0].name for p in range(300))
    assert set(counts) == {"A", "B", "C"}
    assert all(80 <= c <= 120 for c in counts.values()), counts


def test_iphash_buckets_follow_weights() -> None:
    s = make("iphash")
    assert Counter(s.slots(backends(1, 1, 1))) == {"A": 86, "B": 85, "C": 85}
    # large weights: IPVS's runs of `weight` buckets would give A 100, B 100, C 56
    assert Counter(s.slots(backends(100, 100, 100))) == {"A": 86, "B": 85, "C": 85}
    assert Counter(s.slots(backends(1, 0, 3))) == {"A": 64, "C": 192}


def test_iphash_weight_0_gets_nothing() -> None:
    counts = Counter(picks(make("iphash"), backends(1, 0, 1), 300))
    assert set(counts) == {"A", "C"}


def test_iphash_quiesce_in_place_is_honoured() -> None:
    s, bs = make("iphash"), backends(1, 1, 1)
    before = names(s, bs)
    bs[1].weight = 0  # no update(): the guard sees B's weight at lookup
    after = names(s, bs)
    assert "B" in before and "B" not in after


def test_iphash_rebuilds_on_update_and_on_a_new_list() -> None:
    s, bs = make("iphash"), backends(1, 1, 1)
    three = names(s, bs)
    bs[0].weight = 3  # a weight changed in place must be told
    assert names(s, bs) == three
    s.update(bs)
    assert Counter(s.slots(bs)) == {"A": 154, "B": 51, "C": 51}
    assert names(s, bs) != three
    assert names(s, backends(1, 1, 1)) == three  # a new list is noticed without update()
    bs2 = backends(1, 1, 1)
    names(s, bs2)
    bs2.append(BackendState("D", "192.0.2.4", 80))  # so is a list that grew
    assert "D" in names(s, bs2)


# ---------------------------------------------------------------------- lc / wlc
def with_active(bs: list[BackendState], *active: int) -> list[BackendState]:
    for b, a in zip(bs, active, strict=True):
        b.active = a
    return bs


def test_lc_prefers_fewer_flows() -> None:
    bs = with_active(backends(1, 1, 1), 2, 3, 3)
    assert make("lc").pick(bs, CLIENT, 1) == (bs[0], "lc: A 2+0 < B 3+0, +1 more")
    with_active(bs, 5, 3, 1)
    assert make("lc").pick(bs, CLIENT, 1) == (bs[2], "lc: C 1+0 < B 3+0, +1 more")


def test_lc_tie_goes_to_the_first_listed() -> None:
    bs = with_active(backends(1, 1, 1), 5, 3, 3)
    assert make("lc").pick(bs, CLIENT, 1) == (
        bs[1],
        "lc: B 3+0 <= C 3+0, +1 more (tie: first listed)",
    )


def test_lc_ignores_weight_but_skips_weight_0() -> None:
    bs = with_active(backends(0, 1, 5), 0, 1, 2)
    assert make("lc").pick(bs, CLIENT, 1) == (bs[1], "lc: B 1+0 < C 2+0")
    bs = with_active(backends(0, 1), 0, 7)
    assert make("lc").pick(bs, CLIENT, 1) == (bs[1], "lc: B 7+0, the only candidate")


def test_lc_reason_names_the_runner_up_and_counts_the_rest() -> None:
    bs = with_active(backends(1, 1, 1, 1, 1, 1), 4, 0, 1, 2, 3, 5)
    assert make("lc").pick(bs, CLIENT, 1) == (
        bs[1],
        "lc: B 0+0 < C 1+0, +4 more",
    )


def test_lc_weighs_an_established_flow_as_256_others() -> None:
    """IPVS's overhead, active * 256 + inactive: flows in the handshake or closing count,
    a little."""
    bs = with_active(backends(1, 1), 1, 0)
    bs[1].inactive = 255
    assert make("lc").pick(bs, CLIENT, 1) == (bs[1], "lc: B 0+255 < A 1+0")
    bs[1].inactive = 256
    assert make("lc").pick(bs, CLIENT, 1) == (bs[0], "lc: A 1+0 <= B 0+256 (tie: first listed)")
    bs[1].inactive = 257
    assert make("lc").pick(bs, CLIENT, 1) == (bs[0], "lc: A 1+0 < B 0+257")


@pytest.mark.parametrize("name", ["lc", "wlc"])
def test_a_burst_of_new_flows_spreads_before_any_is_established(name: str) -> None:
    """SYNs that arrive together are all in their handshake (inactive) when the next one is
    scheduled: counting only established flows sent every one of them to the first backend."""
    s, bs = make(name), backends(1, 1, 1)
    got = []
    for _ in range(6):
        b, _reason = pick(s, bs)
        b.inactive += 1  # what the switch counts for a new flow, in SYN_RECV
        got.append(b.name)
    assert got == ["A", "B", "C", "A", "B", "C"]
    assert pick(s, bs)[1] == (
        "lc: A 0+2 <= B 0+2, +1 more (tie: first listed)"
        if name == "lc"
        else "wlc: A 0+2 per 1=0.01 <= B 0+2 per 1=0.01, +1 more (tie: first listed)"
    )


def test_wlc_compares_flows_per_weight() -> None:
    bs = with_active(backends(2, 3), 3, 5)
    assert make("wlc").pick(bs, CLIENT, 1) == (bs[0], "wlc: A 3+0 per 2=1.50 < B 5+0 per 3=1.67")
    bs = with_active(backends(2, 1), 3, 2)  # lc would take B (2 < 3); per weight A is less busy
    assert pick(make("lc"), bs)[0] is bs[1]
    assert make("wlc").pick(bs, CLIENT, 1) == (bs[0], "wlc: A 3+0 per 2=1.50 < B 2+0 per 1=2.00")
    bs[0].inactive = 256  # A: (3 * 256 + 256) / 2 = 512, B: 2 * 256 / 1 = 512: a tie
    assert make("wlc").pick(bs, CLIENT, 1) == (
        bs[0],
        "wlc: A 3+256 per 2=2.00 <= B 2+0 per 1=2.00 (tie: first listed)",
    )
    bs[0].inactive = 257  # A: 512.5 > B's 512
    assert make("wlc").pick(bs, CLIENT, 1) == (
        bs[1],
        "wlc: B 2+0 per 1=2.000 < A 3+257 per 2=2.002",
    )


def test_wlc_shows_enough_decimals_to_be_true() -> None:
    bs = with_active(backends(4, 5), 7, 9)  # 1.75 < 1.8
    assert make("wlc").pick(bs, CLIENT, 1) == (bs[0], "wlc: A 7+0 per 4=1.75 < B 9+0 per 5=1.80")
    bs = with_active(backends(3, 1), 3, 1)  # 1 < 1 + 1/768 (1.0013): three decimals
    bs[0].inactive = 1
    assert make("wlc").pick(bs, CLIENT, 1) == (bs[1], "wlc: B 1+0 per 1=1.000 < A 3+1 per 3=1.001")
    bs = with_active(backends(10, 1), 10, 1)  # 1 < 1 + 1/2560 (1.0004): four
    bs[0].inactive = 1
    assert make("wlc").pick(bs, CLIENT, 1) == (
        bs[1],
        "wlc: B 1+0 per 1=1.0000 < A 10+1 per 10=1.0004",
    )


def test_wlc_ties_are_exact_and_go_to_the_first_listed() -> None:
    bs = with_active(backends(3, 0, 6, 2), 1, 0, 2, 1)  # 1/3 = 2/6 < 1/2; B quiesced
    assert make("wlc").pick(bs, CLIENT, 1) == (
        bs[0],
        "wlc: A 1+0 per 3=0.33 <= C 2+0 per 6=0.33, +1 more (tie: first listed)",
    )


# ---------------------------------------------------------------------- maglev
def test_maglev_golden_permutations_and_tables() -> None:
    # pinned: any change to the hash, the permutation or the turns fails here
    assert [maglev.permutation(n, 17) for n in "ABC"] == [(6, 6), (15, 2), (4, 9)]
    equal = maglev.build([("A", 1), ("B", 1), ("C", 1)], 17)
    assert "".join("ABC"[i] for i in equal) == "BABACCAABABBACCBC"
    weighted = maglev.build([("A", 1), ("B", 2), ("C", 3)], 17)
    assert "".join("ABC"[i] for i in weighted) == "BCBACCACBCBBACCBC"
    big = maglev.build([("A", 1), ("B", 1), ("C", 1)], 65537)
    assert "".join("ABC"[i] for i in big[:20]) == "CACACCCACCBAACBCABBB"
    assert maglev.build([], 17) == [-1] * 17


def test_maglev_golden_through_the_scheduler() -> None:
    s, bs = make("maglev", table_size=17), backends(1, 1, 1)
    assert "".join(map(str, s.slots(bs))) == "BABACCAABABBACCBC"
    b, reason = pick(s, bs)
    slot = int(reason.split("slot ")[1].split()[0])
    assert reason == f"maglev: hash(198.51.100.2) -> slot {slot} of 17 -> {b.name}"
    assert s.slots(bs)[slot] == b.name


def test_maglev_disruption_and_restore() -> None:
    n, size = 5, 65537
    s = make("maglev")
    bs = backends(*[1] * n, names="VWXYZ")
    before = s.slots(bs)
    assert Counter(before) == {"V": 13108, "W": 13108, "X": 13107, "Y": 13107, "Z": 13107}
    gone = bs.pop(2)  # X leaves
    after = s.slots(bs)
    own = sum(1 for o in before if o == "X")
    moved = sum(1 for a, b in zip(before, after, strict=True) if a != b)
    beyond = sum(1 for a, b in zip(before, after, strict=True) if a != b and a != "X")
    assert "X" not in after
    assert moved == own + beyond
    assert abs(moved / size - 1 / n) < 0.01  # ~1/N of the keys move
    assert beyond / size < 0.01  # and < 1 % beyond the leaving backend's own
    bs.append(gone)  # back, at another position in the list
    assert s.slots(bs) == before


def test_maglev_disruption_seen_by_clients() -> None:
    s, bs = make("maglev"), backends(1, 1, 1, 1, 1)
    first = picks(s, bs, 1000)
    del bs[3]  # D leaves
    second = picks(s, bs, 1000)
    assert all(b != "D" for b in second)
    assert all(b != a for a, b in zip(first, second, strict=True) if a == "D")
    assert sum(1 for a, b in zip(first, second, strict=True) if a != "D" and a != b) <= 10


def test_maglev_weights() -> None:
    s = make("maglev")
    counts = Counter(s.slots(backends(1, 2, 3)))
    for name, share in (("A", 1 / 6), ("B", 2 / 6), ("C", 3 / 6)):
        assert abs(counts[name] / 65537 - share) < 0.01, counts
    assert Counter(s.slots(backends(1, 0, 1))) == {"A": 32769, "C": 32768}


def test_maglev_ip_port_option() -> None:
    bs = backends(1, 1, 1)
    s = make("maglev")
    assert len({pick(s, bs, CLIENT, p)[0].name for p in range(50)}) == 1
    s = make("maglev", hash_key="ip+port", table_size=251)
    counts = Counter(pick(s, bs, CLIENT, 40000 + p)[0].name for p in range(300))
    assert set(counts) == {"A", "B", "C"}


@pytest.mark.parametrize("size", [65536, 1, 0, 15, 5_000_012, True, "65537", 65537.0])
def test_maglev_table_size_must_be_prime(size: object) -> None:
    with pytest.raises(ValueError, match="table_size"):
        make("maglev", table_size=size)


def test_maglev_quiesce_in_place_is_honoured() -> None:
    s, bs = make("maglev", table_size=251), backends(1, 1, 1)
    assert "C" in names(s, bs)
    bs[2].weight = 0
    assert "C" not in names(s, bs)


# ---------------------------------------------------------------------- all schedulers
def test_make_checks_names_and_options() -> None:
    with pytest.raises(ValueError, match="unknown scheduler 'rrr'"):
        make("rrr")
    with pytest.raises(ValueError, match=r"'hash_key'.*takes no options"):
        make("rr", hash_key="ip")
    with pytest.raises(ValueError, match=r"no option 'tablesize'.*hash_key, table_size"):
        make("maglev", tablesize=17)
    with pytest.raises(ValueError, match=r"hash_key must be one of 'ip', 'ip\+port'"):
        make("iphash", hash_key="port")
    assert make("maglev", hash_key="ip+port", table_size=13).name == "maglev"


@pytest.mark.parametrize("name", ALL)
def test_peek_never_changes_the_next_pick(name: str) -> None:
    opts = {"table_size": 251} if name == "maglev" else {}
    plain, peeked = make(name, **opts), make(name, **opts)
    bs1, bs2 = backends(2, 0, 3, 1), backends(2, 0, 3, 1)
    for i in range(60):
        c, port = client(i % 7), 40000 + i
        want = plain.pick(bs1, c, port)
        seen = peeked.peek(bs2, c, port)
        assert peeked.peek(bs2, c, port) == seen
        got = peeked.pick(bs2, c, port)
        assert want is not None and seen is not None and got is not None
        assert (got[0].name, got[1]) == (seen[0].name, seen[1]) == (want[0].name, want[1])
        for b in (want[0], got[0]):  # count the flow, as the switch does
            b.active += 1
            b.total += 1


@pytest.mark.parametrize("name", ALL)
def test_none_when_no_backend_takes_new_flows(name: str) -> None:
    s = make(name)
    for bs in ([], backends(0, 0, 0)):
        assert s.pick(bs, CLIENT, 1) is None
        assert s.peek(bs, CLIENT, 1) is None
        s.update(bs)
        assert s.pick(bs, CLIENT, 1) is None


@pytest.mark.parametrize("name", ALL)
def test_weight_0_never_gets_a_new_flow(name: str) -> None:
    s, bs = make(name), with_active(backends(1, 0, 2), 3, 0, 3)
    assert "B" not in picks(s, bs, 200)
