"""Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted as Katran's MaglevHashV2.

Theory of operation. The lookup table has M slots, M prime. Each backend has its own
permutation of the slots, from two hashes of its name:

    offset = h1 % M,  skip = h2 % (M - 1) + 1,  its j-th preferred slot = (offset + j*skip) % M

(skip is in 1..M-1 and M is prime, so the walk visits every slot once). Backends then take
turns: on its turn a backend claims the first slot of its permutation not yet taken, until all
M slots are taken. A flow's backend is table[hash(flow) % M].

Why it is consistent: a backend's preferences do not depend on the others, so removing one
frees its slots and hardly changes who wins the rest (the paper and our tests: < 1 % of slots
beyond the removed backend's own move, with M = 65537). Adding it back rebuilds the very same
table, because the table depends only on the set of (name, weight): callers pass the members
in a canonical order (the scheduler sorts them by name).

Weights, as Katran's MaglevHashV2: each round every backend adds its weight to a credit and
takes a turn each time the credit reaches the largest weight (then pays that largest weight).
A backend of weight w thus gets w/max turns per round, so ~w/sum(weights) of the slots.
(Katran's first version honoured weights only in the first round.)

Pure code: names and weights in, a list of member indices out. No I/O, no backend objects.
"""

from __future__ import annotations

from collections.abc import Sequence

from pktswitch.sched.hashing import hash64x2

DEFAULT_TABLE_SIZE = 65537  # Katran's ring size and Envoy's default table_size, prime
MAX_TABLE_SIZE = 5_000_011  # Envoy's limit for maglev table_size (also prime)


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def permutation(name: str, size: int) -> tuple[int, int]:
    """(offset, skip) of a backend's walk over a table of `size` slots."""
    h1, h2 = hash64x2(name.encode())
    return h1 % size, h2 % (size - 1) + 1


def build(members: Sequence[tuple[str, int]], size: int) -> list[int]:
    """The lookup table: slot -> index into `members` ((name, weight > 0) pairs); -1 if none."""
    table = [-1] * size
    if not members:
        return table
    weights = [w for _, w in members]
    top = max(weights)
    if min(weights) <= 0:
        raise ValueError("maglev members need a weight > 0")
    perms = [permutation(name, size) for name, _ in members]
    pos = [offset for offset, _ in perms]  # each member's next preferred slot
    credit = [0] * len(members)
    free = size
    while True:
        for i, w in enumerate(weights):
            credit[i] += w
            if credit[i] < top:
                continue
            credit[i] -= top
            skip = perms[i][1]
            c = pos[i]
            while table[c] >= 0:  # walk on to the first slot nobody has taken
                c = (c + skip) % size
            table[c] = i
            pos[i] = (c + skip) % size
            free -= 1
            if free == 0:
                return table
