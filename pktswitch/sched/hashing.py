"""Keyed hashes for the hashing schedulers (iphash, maglev): BLAKE2b, the same number for the
same input and key on every run and every host (Python's built-in hash() is salted per
process).

A client is hashed with the switch's secret (`hash_secret` in [switch]; a random one at each
start when the config leaves it out): with a key anyone knows, a client could choose source
addresses or ports that land on the backend it wants to load. Switches that must agree on
every client's backend (behind one ECMP route) share one secret, and a switch that must keep
its clients' backends over a restart keeps its secret in the config. Maglev's permutation of
each backend, built from its name, is hashed with the fixed HASH_KEY, so that every switch
builds the same table from the same backends (Katran hashes its backends with fixed seeds);
HASH_KEY also keys a client's hash where no secret is given (a scheduler on its own).
"""

from __future__ import annotations

import hashlib
import socket

HASH_KEY = b"pktswitch-sched"  # public on purpose: see the module docstring

HASH_KEYS = ("ip", "ip+port")  # what a client flow is hashed on: the `hash_key` option


def hash64(data: bytes, key: bytes = HASH_KEY) -> int:
    """A 64-bit hash of `data` under `key` (at most 64 bytes), identical on every run and
    host: what C computes (native/hash.c, pks_hash64)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=key).digest(), "little")


def hash64x2(data: bytes) -> tuple[int, int]:
    """Two independent 64-bit hashes of `data` (Maglev's offset and skip)."""
    d = hashlib.blake2b(data, digest_size=16, key=HASH_KEY).digest()
    return int.from_bytes(d[:8], "little"), int.from_bytes(d[8:], "little")


def flow_key(client: bytes, cport: int, with_port: bool) -> bytes:
    """The bytes a flow is hashed on: the client address, and its port for "ip+port"."""
    return client + cport.to_bytes(2, "big") if with_port else client


def flow_text(client: bytes, cport: int, with_port: bool) -> str:
    """What was hashed, for the reason string: "198.51.100.2" or "198.51.100.2:40312"."""
    ip = socket.inet_ntoa(client)
    return f"{ip}:{cport}" if with_port else ip
