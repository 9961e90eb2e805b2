"""C's picks held to the Python schedulers', new flow by new flow, as scapy holds checksums.

sched/ is the specification: core/ahead.py compiles a service's scheduler into the program C
runs (rr, wrr: the members and the scheduler's state, which C moves on; iphash, maglev:
the table, C hashing the client; lc, wlc, lrt: C picking by the flows it counts, lrt also by
the response times the switch writes) and C opens every client's SYN itself.
Here a seeded random walk drives one switch per batch: new flows from random clients, reused
client ports, handshakes completed, flows closed, reset and expired (so that lc and wlc see
established and other flows in every mix), weights set (0 included), backends drained, taken
down and brought up by their health checks, reloads that add, remove and reorder backends,
and response-time samples. Beside the switch runs the oracle: a scheduler of its own, built
with make(), on BackendState records of its own that the walk keeps as it expects the switch
to (weights, health, response times, and each flow's state and idle timeout, hence active and
inactive).

A case is one new flow: the backend of the rewritten SYN must be the one the oracle picks for
that client and port at that point, C must have opened it (flows_opened_in_c grows by one),
and the flow's reason must be the oracle's. After every step the counts the oracle picked
on must be the switch's and C's, and after each batch the flow table must list every flow on
the backend its SYN went to. A failure names the batch's seed: the walk of one batch replays
alone: Walk(label, batch).run().
"""

from __future__ import annotations

import heapq
import random
import time
from dataclasses import dataclass, field
from typing import cast

import pytest
from differential_helpers import (
    ACK,
    FIN,
    PACKET_LEN,
    RST,
    SYN,
    checksums_ok,
    endpoints,
    tcp4,
)
from pktswitch._native import lib
from scapy.layers.inet import IP, TCP

from pktswitch.control.config import parse
from pktswitch.core.switch import MAX_WEIGHT, Switch
from pktswitch.core.tcpstate import DEFAULT_TIMEOUTS, State
from pktswitch.sched.base import Hashed, Scheduler
from pktswitch.sched.health_policy import check_result
from pktswitch.sched.pool import BackendState
from pktswitch.sched.registry import make

CASES = 10_000  # new flows checked per scheduler, at least
VIP, PORT, SNAT = "203.0.113.10", 80, "203.0.113.1"
VIP_BYTES = bytes(map(int, VIP.split(".")))
MAX_FLOWS = 4096  # more than a batch ever holds: C always has a spare slot for a new flow
REUSABLE = (State.TIME_WAIT, State.CLOSE)  # a client's SYN in them opens a new flow

# (label, scheduler, options); iphash's and maglev's table_size is drawn per batch
SCHEDULERS = [
    ("rr", "rr", {}),  # every backend taking flows (LIVE_ONLY)
    ("rr-weight-0", "rr", {}),  # with weights 0, drains and removals
    ("wrr", "wrr", {}),
    ("iphash-ip", "iphash", {"hash_key": "ip"}),
    ("iphash-ip+port", "iphash", {"hash_key": "ip+port"}),
    ("maglev-ip", "maglev", {"hash_key": "ip"}),
    ("maglev-ip+port", "maglev", {"hash_key": "ip+port"}),
    ("lc", "lc", {}),
    ("wlc", "wlc", {}),
    ("lrt", "lrt", {}),
]
TABLE_SIZES = {"iphash": (256, 256, 61, 1024), "maglev": (251, 1021)}  # maglev's: small primes
# walks in which every backend takes new flows: no weight 0, drain, check failed or backend
# removed by a reload
LIVE_ONLY = {"rr"}

# how often each step is taken (out of the sum)
STEPS = {
    "syn": 50,
    "reuse": 6,
    "establish": 14,
    "close": 7,
    "reset": 4,
    "tick": 4,
    "weight": 6,
    "drain": 3,
    "health": 3,
    "reload": 1,
    "sample": 4,
}
TAKE_OUT = ("drain", "health")  # of a LIVE_ONLY walk
RESTORE = 0.6  # a drain or health step brings a backend back this often, if one is out


def draw_weight(rng: random.Random, scheduler: str, live_only: bool = False) -> int:
    """A weight, 0 included unless `live_only`; wrr's stay small (its period, their sum,
    must fit in C)."""
    if live_only:
        return rng.choice((1, 1, 2, 5))
    if scheduler == "rr":
        return rng.choice((0, 1, 1, 2, 5))
    if scheduler == "wrr":
        return rng.choice((0, rng.randint(1, 3), rng.randint(1, 20), rng.randint(1, 20)))
    r = rng.random()
    if r < 0.15:
        return 0
    if r < 0.85:
        return rng.randint(1, 10)
    return rng.choice((rng.randint(11, 1000), MAX_WEIGHT))


def draw_pool_size(rng: random.Random) -> int:
    return rng.choice((1, 2, 3, rng.randint(2, 8), rng.randint(2, 12), rng.randint(12, 40)))


@dataclass(slots=True, eq=False)
class Flow:
    """A flow as the oracle's side expects the switch to hold it."""

    backend: BackendState  # the oracle's record of the backend its SYN went to
    state: State
    due: float  # when it expires if no packet comes (the last packet + its state's timeout)
    back: tuple[bytes, int, bytes, int]  # the backend's packets: source and destination
    seq: int  # the client's next sequence number
    created: float  # when its SYN came


@dataclass(slots=True)
class Tally:
    cases: int = 0  # new flows C opened, each on the oracle's backend
    reused: int = 0  # of them, on a client port whose flow was in TIME_WAIT or CLOSE
    refused: int = 0  # SYNs no backend took (every weight 0): dropped by both
    evicted: int = 0  # half-open flows ended to make room for a new one
    expired: int = 0
    batches: int = 0
    weights: set[int] = field(default_factory=set)
    states: set[tuple[int, int]] = field(default_factory=set)  # (active, inactive) picked on


class Walk:
    """One batch: a switch and the oracle beside it, driven by one seeded random walk."""

    def __init__(self, label: str, batch: int, tally: Tally | None = None) -> None:
        self.label = label
        self.seed = f"{label}/{batch}"
        rng = self.rng = random.Random(self.seed)
        _, name, options = next(s for s in SCHEDULERS if s[0] == label)
        self.name = name
        self.options = dict(options)
        if name in TABLE_SIZES:
            self.options["table_size"] = rng.choice(TABLE_SIZES[name])
        self.tally = tally if tally is not None else Tally()
        self.live_only = label in LIVE_ONLY
        self.steps = {k: n for k, n in STEPS.items() if not (self.live_only and k in TAKE_OUT)}
        self.mode = rng.choice(("fullnat", "nat"))
        self.max_half_open = rng.choice((2, 5, 16, 64, MAX_FLOWS // 4))
        self._names = 0
        self.backends = [self._new_backend() for _ in range(draw_pool_size(rng))]
        self._weigh()
        # the hashing schedulers' secret: the config's, or the switch's random one
        chars = "".join(rng.choices("abcdef0123456789", k=rng.randint(16, 64)))
        self.secret = rng.choice(("", chars))
        self.sw = Switch.from_config(parse(self._config()), seed=rng.getrandbits(32))
        (self.svc,) = self.sw.services
        self.oracle = make(name, **self.options)
        want = self.secret.encode() if self.secret else self.sw.hash_secret
        assert self.sw.hash_secret == want and len(want) == (len(self.secret) or 32)
        if self.oracle.program == "hash":  # it hashes clients as the switch does
            cast(Hashed, self.oracle).key = self.sw.hash_secret
        self.oracle.update(self.backends)
        self.now = 1000.0 + rng.random()
        self.flows: dict[tuple[bytes, int], Flow] = {}
        self.half_open: dict[tuple[bytes, int], None] = {}  # in SYN_RECV, oldest first
        self._dues: list[tuple[float, int, tuple[bytes, int], Flow]] = []
        self._pushed = 0
        self.clients: list[bytes] = []  # addresses seen, drawn again (hash_key ip)
        self.step_no = 0

    # -------------------------------------------------------------- the oracle's side
    def _new_backend(self) -> BackendState:
        rng, k = self.rng, self._names
        self._names += 1
        name = f"{rng.choice('abcdefghkmnprstwxz')}{rng.getrandbits(16):04x}-{k}"  # maglev sorts
        ip = f"10.{k >> 8 & 255}.{k & 255}.{rng.randint(1, 254)}"
        port = rng.choice((80, 8080, rng.randint(1024, 65535)))
        return BackendState(name, ip, port, draw_weight(rng, self.name, self.live_only))

    def _weigh(self) -> None:
        """Each record's weight: what the switch should give it (down or draining: 0)."""
        for b in self.backends:
            b.weight = b.config_weight if b.up and not b.draining else 0
        self.by_endpoint = {(b.ip_bytes, b.port): b for b in self.backends}

    def _config(self) -> str:
        lines = [
            "[switch]",
            f'mode = "{self.mode}"',
            *([f'snat = ["{SNAT}"]'] if self.mode == "fullnat" else []),
            'control = "/tmp/pktswitch-differential.sock"',
            f"max_flows = {MAX_FLOWS}",
            f"max_half_open = {self.max_half_open}",
            'syn_cookies = "off"',  # (the model opens a flow for every SYN: test_cookies.py)
            *([f'hash_secret = "{self.secret}"'] if self.secret else []),
            "[[service]]",
            'name = "web"',
            f'vip = "{VIP}:{PORT}"',
            f'scheduler = "{self.name}"',
            *(f"{k} = {v!r}".replace("'", '"') for k, v in self.options.items()),
            "[service.health]",
            'check = "tcp"',
            "passive = false",
        ]
        for b in self.backends:
            lines += [
                "[[service.backend]]",
                f'name = "{b.name}"',
                f'address = "{b.ip}:{b.port}"',
                f"weight = {b.config_weight}",
            ]
        return "\n".join(lines) + "\n"

    def _set_state(self, key: tuple[bytes, int], f: Flow, state: State) -> None:
        """A packet of the flow, which moves it to `state` (or keeps it there)."""
        b = f.backend
        if (f.state == State.ESTABLISHED) != (state == State.ESTABLISHED):
            step = 1 if state == State.ESTABLISHED else -1
            b.active += step
            b.inactive -= step
        if f.state == State.SYN_RECV and state != State.SYN_RECV:
            del self.half_open[key]
        f.state = state
        f.due = self.now + DEFAULT_TIMEOUTS[state]
        self._pushed += 1
        heapq.heappush(self._dues, (f.due, self._pushed, key, f))

    def _remove(self, key: tuple[bytes, int]) -> None:
        f = self.flows.pop(key)
        if f.state == State.ESTABLISHED:
            f.backend.active -= 1
        else:
            f.backend.inactive -= 1
        self.half_open.pop(key, None)

    def _expire_due(self) -> int:
        n = 0
        dues = self._dues
        while dues and dues[0][0] <= self.now:
            due, _, key, f = heapq.heappop(dues)
            if self.flows.get(key) is f and f.due == due:
                self._remove(key)
                n += 1
        return n

    # --------------------------------------------------------------- the switch's side
    def send(self, pkt: bytes) -> bytes | None:
        sw = self.sw
        sw.buf[:PACKET_LEN] = pkt
        if not sw.process(PACKET_LEN, self.now):
            return None
        return bytes(sw.buf[:PACKET_LEN])

    def opened_reason(self) -> str | None:
        """The reason of the flow the last packet opened (the switch writes it applying
        C's OPEN event), None if it opened none."""
        sw = self.sw
        if sw.meta.slot < 0:
            return None
        c = sw.table.tab.flows[sw.meta.slot]
        return sw.table.reasons.text(c.reason) if c.used and c.reason != lib.PKS_NONE else None

    def opened_in_c(self) -> int:
        return int(self.sw.stats(self.now)["flows_opened_in_c"])

    def where(self) -> str:
        return f"(batch {self.seed!r}, step {self.step_no}, {self.name} {self.options})"

    # ------------------------------------------------------------------- the steps
    def _client(self) -> bytes:
        rng = self.rng
        if self.clients and rng.random() < 0.5:
            return rng.choice(self.clients)
        while True:
            a = rng.getrandbits(32).to_bytes(4, "big")
            if a[0] not in (0, 10, 127, 203) and a[0] < 224:
                break
        if len(self.clients) < 64:
            self.clients.append(a)
        return a

    def syn(self, key: tuple[bytes, int] | None = None) -> None:
        """A client's SYN: a new flow (a case), on a fresh client port or on `key`, reused."""
        if key is None:
            while key is None or key in self.flows:
                key = (self._client(), self.rng.randint(1, 65535))
        if key in self.flows:  # the old flow ends before the pick, in Python as in C
            self._remove(key)
        client, cport = key
        picked = self.oracle.pick(self.backends, client, cport)
        opened = self.opened_in_c()
        seq = self.rng.getrandbits(32)
        out = self.send(tcp4(client, cport, VIP_BYTES, PORT, SYN, seq))
        if picked is None:
            assert out is None, f"no backend takes flows, yet the SYN went out {self.where()}"
            assert self.opened_in_c() == opened
            self.tally.refused += 1
            return
        want, reason = picked
        told = self.opened_reason()
        assert self.opened_in_c() == opened + 1, (
            f"C did not open the flow (flows_opened_in_c {opened} -> {self.opened_in_c()}; "
            f"left to Python: {self.sw.stats(self.now).get('to_python')}) {self.where()}"
        )
        assert out is not None and checksums_ok(out), f"the SYN was dropped {self.where()}"
        src, sport, dst, dport = endpoints(out)
        got = self.by_endpoint.get((dst, dport))
        if got is not want:
            counts = [(b.name, b.weight, b.active, b.inactive) for b in self.backends]
            raise AssertionError(
                f"C gave client {'.'.join(map(str, client))}:{cport} the backend at "
                f"{'.'.join(map(str, dst))}:{dport} ({got and got.name}); the Python "
                f"scheduler picks {want.name} ({reason}); backends (name, weight, active, "
                f"inactive): {counts} {self.where()}"
            )
        assert told == reason, f"C's flow says {told!r}, the scheduler {reason!r} {self.where()}"
        self.tally.cases += 1
        self.tally.weights.add(want.weight)
        if self.name in ("lc", "wlc"):
            self.tally.states.add((min(want.active, 3), min(want.inactive, 3)))
        if self.name == "lrt":
            self.tally.states.add((min(want.active, 3), int(want.rt is not None)))
        # room, after the pick: the oldest half-open flows (C's and Python's order)
        while len(self.half_open) >= self.max_half_open:
            self._remove(next(iter(self.half_open)))
            self.tally.evicted += 1
        f = Flow(want, State.NONE, 0.0, (dst, dport, src, sport), seq + 1, self.now)
        self.flows[key] = f
        want.inactive += 1
        self.half_open[key] = None
        self._set_state(key, f, State.SYN_RECV)

    def _pick_flow(self, *states: State) -> tuple[bytes, int] | None:
        keys = [k for k, f in self.flows.items() if f.state in states]
        return self.rng.choice(keys) if keys else None

    def _from_backend(self, key: tuple[bytes, int], flags: int, seq: int, ack: int) -> None:
        src, sport, dst, dport = self.flows[key].back
        assert self.send(tcp4(src, sport, dst, dport, flags, seq, ack)) is not None, (
            f"the backend's packet (flags {flags:#x}) was dropped {self.where()}"
        )

    def _from_client(self, key: tuple[bytes, int], flags: int, ack: int) -> None:
        f = self.flows[key]
        out = self.send(tcp4(key[0], key[1], VIP_BYTES, PORT, flags, f.seq, ack))
        assert out is not None, f"the client's packet (flags {flags:#x}) was dropped {self.where()}"
        f.seq += 1 if flags & FIN else 0

    def establish(self) -> None:
        key = self._pick_flow(State.SYN_RECV)
        if key is None:
            return
        f = self.flows[key]
        self._from_backend(key, SYN | ACK, 5000, f.seq)
        f.backend.add_sample("syn", self.now - f.created, self.now)  # the handshake, timed
        self._set_state(key, f, State.SYN_RECV)
        self._from_client(key, ACK, 5001)
        self._set_state(key, f, State.ESTABLISHED)

    def close(self) -> None:
        """Both FINs and the last ACK of an established flow (TIME_WAIT), or the client's FIN
        on a half-open one (TIME_WAIT too: IPVS's grid)."""
        key = self._pick_flow(State.ESTABLISHED, State.SYN_RECV)
        if key is None:
            return
        f = self.flows[key]
        if f.state == State.SYN_RECV:
            self._from_client(key, FIN | ACK, 5001)
            self._set_state(key, f, State.TIME_WAIT)
            return
        self._from_client(key, FIN | ACK, 5001)
        self._set_state(key, f, State.CLOSE_WAIT)
        self._from_backend(key, FIN | ACK, 5001, f.seq)
        self._set_state(key, f, State.TIME_WAIT)
        self._from_client(key, ACK, 5002)
        self._set_state(key, f, State.TIME_WAIT)

    def reset(self) -> None:
        key = self._pick_flow(State.ESTABLISHED, State.SYN_RECV)
        if key is None:
            return
        self._from_backend(key, RST, 5001, 0)
        self._set_state(key, self.flows[key], State.CLOSE)

    def reuse(self) -> None:
        """A client's SYN on the port of its flow in TIME_WAIT or CLOSE, when a backend takes
        it and the half-open share has room (C may leave a SYN that both ends a flow and
        needs room to Python: left out)."""
        key = self._pick_flow(*REUSABLE)
        room = len(self.half_open) < self.max_half_open
        if key is not None and room and any(b.weight > 0 for b in self.backends):
            self.tally.reused += 1
            self.syn(key)

    def tick(self) -> None:
        rng = self.rng
        self.now += rng.choice((rng.uniform(0, 5), rng.uniform(5, 70), rng.uniform(100, 130)))

    def _backend_named(self, out: list[BackendState]) -> tuple[BackendState, BackendState]:
        """A backend: the oracle's record and the switch's; one of those `out` (drained, or
        down) RESTORE of the time."""
        rng = self.rng
        mine = rng.choice(out if out and rng.random() < RESTORE else self.backends)
        _, theirs = self.sw.backend("web", mine.name)
        return mine, theirs

    def weight(self) -> None:
        mine, _ = self._backend_named([])
        mine.config_weight = draw_weight(self.rng, self.name, self.live_only)
        self.sw.set_weight("web", mine.name, mine.config_weight, self.now)
        self._changed()

    def drain(self) -> None:
        mine, _ = self._backend_named([b for b in self.backends if b.draining])
        mine.draining = not mine.draining
        self.sw.set_drain("web", mine.name, mine.draining, self.now)
        self._changed()

    def health(self) -> None:
        """The active checks take a backend down (fall failures in a row) or up (rise
        passes), as the daemon runs them; the switch refreshes, as after every check."""
        mine, theirs = self._backend_named([b for b in self.backends if not b.up])
        mine.up = not mine.up
        while theirs.up != mine.up:
            check_result(theirs, mine.up, self.svc.health, self.now, "lab")
        self.sw.refresh(self.now)
        self._changed()

    def reload(self) -> None:
        """A re-read config: some backends removed (their flows stay), some added, some
        reweighted, the list maybe reordered."""
        rng = self.rng
        kept = [b for b in self.backends if self.live_only or rng.random() < 0.8]
        if rng.random() < 0.3:
            rng.shuffle(kept)
        for b in kept:
            if rng.random() < 0.2:
                b.config_weight = draw_weight(rng, self.name, self.live_only)
        for _ in range(rng.choice((0, 0, 1, 2))):
            kept.insert(rng.randint(0, len(kept)), self._new_backend())
        if not kept:
            kept.append(self._new_backend())
        self.backends = kept
        self.sw.reconfigure(parse(self._config()), self.now)
        self._changed()

    def sample(self) -> None:
        """A response-time sample of a backend (a handshake, a first response, a probe),
        which lrt reads, as the switch takes it."""
        rng = self.rng
        mine, theirs = self._backend_named([])
        kind = rng.choice(("syn", "data", "probe"))
        seconds = rng.choice((rng.uniform(0, 0.002), rng.uniform(0, 0.2), rng.expovariate(10)))
        mine.add_sample(kind, seconds, self.now)
        self.sw.sample(theirs, kind, seconds, self.now)

    def _changed(self) -> None:
        """The control plane tells the oracle, as the switch tells its scheduler."""
        self._weigh()
        self.oracle.update(self.backends)

    # ----------------------------------------------------------------------- checks
    def check_counts(self) -> None:
        """The counts the oracle picks on are the switch's and C's, backend by backend."""
        table = self.sw.table
        for mine, theirs in zip(self.backends, self.svc.backends, strict=True):
            assert (mine.name, mine.weight) == (theirs.name, theirs.weight), self.where()
            want = (mine.active, mine.inactive)
            assert (theirs.active, theirs.inactive) == want, (
                f"{mine.name}: the switch counts {theirs.active}+{theirs.inactive}, the walk "
                f"{want} {self.where()}"
            )
            number = table.backends.get(theirs)
            if number is not None:
                assert table.load(number) == want, f"{mine.name}: C's counts {self.where()}"
        assert len(table) == len(self.flows), f"flows in the table {self.where()}"

    def check_table(self) -> None:
        """Every flow listed on the backend its SYN went to, in the state the walk expects,
        with the reason of a pick Python agrees with."""
        want = {
            (f"{'.'.join(map(str, k[0]))}:{k[1]}", f.backend.name, f.state.name)
            for k, f in self.flows.items()
        }
        rows = self.sw.flows(self.now)
        assert {(r["client"], r["backend"], r["state"]) for r in rows} == want, self.where()
        for r in rows:
            assert "other counts than Python's" not in r["reason"], (r, self.where())

    def run(self) -> None:
        """Steps until the batch's number of new flows were checked (or refused)."""
        rng, tally = self.rng, self.tally
        cases = rng.randint(50, 600)
        kinds, weights = list(self.steps), list(self.steps.values())
        start = tally.cases + tally.refused
        while tally.cases + tally.refused - start < cases:
            self.step_no += 1
            (kind,) = rng.choices(kinds, weights)
            self.now += rng.expovariate(20.0)  # 50 ms apart on average
            getattr(self, kind)()
            expired = self.sw.expire(self.now)
            assert expired == self._expire_due(), f"flows expired {self.where()}"
            tally.expired += expired
            self.check_counts()
        self.check_table()
        tally.batches += 1


def walk(label: str, cases: int = CASES) -> Tally:
    """Batches of one scheduler until `cases` new flows were checked."""
    tally = Tally()
    batch = 0
    while tally.cases < cases:
        w = Walk(label, batch, tally)
        w.run()
        batch += 1
    return tally


@pytest.mark.parametrize("label", [s[0] for s in SCHEDULERS])
def test_c_picks_the_backend_the_python_scheduler_picks(label: str) -> None:
    started = time.perf_counter()
    t = walk(label)
    seconds = time.perf_counter() - started
    print(
        f"{label}: {t.cases} cases ({t.reused} on reused ports), {t.refused} refused, "
        f"{t.evicted} evicted, {t.expired} expired, {t.batches} batches, {seconds:.1f} s"
    )
    assert t.cases >= CASES
    # the walk reached what it is meant to: reused ports, evictions, expiries, weights 0
    # (refusals), the largest weight, and for lc and wlc both counts above 0 on the pick
    assert t.reused > 0 and t.evicted > 0 and t.expired > 0
    assert (t.refused > 0) == (label not in LIVE_ONLY)
    if not label.startswith(("rr", "wrr")):
        assert MAX_WEIGHT in t.weights
    if label in ("lc", "wlc"):
        assert {(a, i) for a in (1, 2, 3) for i in (1, 2, 3)} <= t.states
    if label == "lrt":  # picked on loads 0..3 with a measured time, and unmeasured
        assert {(0, 0), (0, 1), (1, 1), (2, 1), (3, 1)} <= t.states


# ------------------------------- rr: its turn after C handed out a whole period
NOW = 1000.0
CLIENT = bytes([198, 51, 100, 2])


def rr_config(backends: dict[str, int]) -> str:
    """A switch config: one rr service, backend name -> weight (A at 10.0.0.1, B .2, ...)."""
    text = f'[switch]\nsnat = ["{SNAT}"]\ncontrol = "/tmp/pktswitch-differential.sock"\n'
    text += f'[[service]]\nname = "web"\nvip = "{VIP}:{PORT}"\nscheduler = "rr"\n'
    for name, weight in backends.items():
        ip = f"10.0.0.{ord(name) - ord('A') + 1}"
        text += f'[[service.backend]]\nname = "{name}"\naddress = "{ip}:80"\nweight = {weight}\n'
    return text


def rr_pool(backends: dict[str, int]) -> list[BackendState]:
    return [
        BackendState(name, f"10.0.0.{ord(name) - ord('A') + 1}", 80, weight)
        for name, weight in backends.items()
    ]


def syn_to(sw: Switch, cport: int) -> str:
    """The backend a client's SYN goes to (C must open it), by name."""
    opened = sw.stats(NOW)["flows_opened_in_c"]
    sw.buf[:PACKET_LEN] = tcp4(CLIENT, cport, VIP_BYTES, PORT, SYN, 100)
    assert sw.process(PACKET_LEN, NOW)
    assert sw.stats(NOW)["flows_opened_in_c"] == opened + 1
    dst = sw.buf[16:20]
    (svc,) = sw.services
    (name,) = [b.name for b in svc.backends if b.ip_bytes == dst]
    return name


def rr_turns(rr: Scheduler, pool: list[BackendState], n: int) -> list[str]:
    """rr's next n answers, by name."""
    turns = [rr.pick(pool, CLIENT, 0) for _ in range(n)]
    return [t[0].name for t in turns if t is not None]


def test_rr_s_turn_after_a_whole_period_in_c_past_a_backend_of_weight_0() -> None:
    """A=1, B=0, C=0: C's period is [A]. One flow goes to A, and rr's turn to B (the next
    one it looks at). B's weight set to 1: rr gives B, then A, and so must C (C counts the
    answers it took, and the switch replays them on rr, not their count modulo a period)."""
    weights = {"A": 1, "B": 0, "C": 0}
    sw = Switch.from_config(parse(rr_config(weights)), seed=1)
    rr, pool = make("rr"), rr_pool(weights)
    assert [syn_to(sw, 1)] == rr_turns(rr, pool, 1) == ["A"]
    sw.set_weight("web", "B", 1, NOW)
    pool[1].weight = pool[1].config_weight = 1
    rr.update(pool)
    assert rr_turns(rr, pool, 2) == ["B", "A"]
    assert [syn_to(sw, 2), syn_to(sw, 3)] == ["B", "A"]


def test_rr_s_turn_after_a_whole_period_in_c_of_a_list_that_shrank() -> None:
    """A, B, C: two flows (A, B), and rr's turn is at the third place. A reload removes C:
    rr gives A, B (its turn wraps), which leaves its turn at the first place. C is back by
    another reload: rr gives A, and so must C."""
    three = {"A": 1, "B": 1, "C": 1}
    two = {"A": 1, "B": 1}
    sw = Switch.from_config(parse(rr_config(three)), seed=1)
    rr, pool = make("rr"), rr_pool(three)
    assert [syn_to(sw, 1), syn_to(sw, 2)] == rr_turns(rr, pool, 2) == ["A", "B"]
    sw.reconfigure(parse(rr_config(two)), NOW)
    rr.update(pool[:2])
    assert [syn_to(sw, 3), syn_to(sw, 4)] == rr_turns(rr, pool[:2], 2) == ["A", "B"]
    sw.reconfigure(parse(rr_config(three)), NOW)
    pool[2] = rr_pool(three)[2]  # a backend a reload adds is new, as the switch's
    rr.update(pool)
    assert rr_turns(rr, pool, 1) == ["A"]
    assert [syn_to(sw, 5)] == ["A"]


def test_the_walk_fails_when_c_and_the_oracle_disagree() -> None:
    """The check itself: an oracle one pick ahead of the switch is caught at once."""
    w = Walk("rr", 1)
    while sum(b.weight > 0 for b in w.backends) < 2:
        w.backends.append(w._new_backend())
        w.sw.reconfigure(parse(w._config()), w.now)
        w._changed()
    w.oracle.pick(w.backends, bytes(4), 0)
    with pytest.raises(AssertionError, match="the Python scheduler picks"):
        w.syn()


def test_the_packets_are_the_bytes_scapy_builds() -> None:
    rng = random.Random(5)
    for flags in (SYN, SYN | ACK, ACK, FIN | ACK, RST):
        src, dst = rng.randbytes(4), rng.randbytes(4)
        sport, dport, seq, ack = (rng.randint(1, 65535) for _ in range(4))
        ours = tcp4(src, sport, dst, dport, flags, seq, ack)
        theirs = IP(src=".".join(map(str, src)), dst=".".join(map(str, dst))) / TCP(
            sport=sport, dport=dport, flags=flags, seq=seq, ack=ack
        )
        assert ours == bytes(theirs)
        assert endpoints(ours) == (src, sport, dst, dport) and checksums_ok(ours)
        assert not checksums_ok(ours[:-1] + bytes([ours[-1] ^ 1]))
