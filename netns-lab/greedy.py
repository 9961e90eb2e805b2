"""A greedy client, for the lab only: N connections to HOST:PORT from SOURCE (an address of
the namespace it runs in), all SYNs out at once, as many as the switch lets through made
within CONNECT_TIMEOUT; prints one JSON line {"established": k, "refused": N - k}, then holds
what it made for SECONDS (bounded: it stops by itself) or until it is terminated.

    greedy.py HOST PORT SOURCE N SECONDS
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from holdconn import await_connects, start_connects

CONNECT_TIMEOUT = 3.0  # seconds: a SYN the switch drops, and its retry at 1 s, go unanswered


def main() -> int:
    host, port, source = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    n, seconds = int(sys.argv[4]), float(sys.argv[5])
    conns = start_connects(host, port, n, source)
    made = await_connects(conns, CONNECT_TIMEOUT)
    print(json.dumps({"established": len(made), "refused": n - len(made)}), flush=True)
    for s in conns:
        if s not in made:
            s.close()
    time.sleep(seconds)
    for s in made:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
