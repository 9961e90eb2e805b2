"""Deterministic hashes for the hashing schedulers (iphash, maglev).

Python's built-in hash() is salted per process (PYTHONHASHSEED), so a client would land on a
different backend after every restart, and two switches behind one ECMP router would disagree.
These hashes are keyed BLAKE2b with a fixed key: the same input gives the same number on every
run and every host (Katran uses MurmurHash3 with fixed seeds for the same reason).
"""

from __future__ import annotations

import hashlib
import socket

HASH_KEY = b"pktswitch-sched"  # fixed on purpose: see the module docstring

HASH_KEYS = ("ip", "ip+port")  # what a client flow is hashed on: the `hash_key` option


def hash64(data: bytes) -> int:
    """A 64-bit hash of `data`, identical on every run and host."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=HASH_KEY).digest(), "little")


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
