"""Long-lived load: CONNS keep-alive HTTP connections, each making requests back to back (or one
every INTERVAL seconds) for DURATION seconds (bounded: it stops by itself), or until SIGTERM
stops it sooner. Prints "ready" once every connection is open, then at the end one JSON line:

    {"conns": N, "start": the monotonic clock as they began, "requests": total,
     "lost": [how each lost connection ended], "backends": {BACKEND: requests},
     "per_second": [requests in each whole second it ran], "local": [...]}

A lost connection is one that was reset, closed by the peer, timed out or answered wrongly
before DURATION was over: what a load balancer must never cause to an established flow.

    kaload.py HOST PORT CONNS DURATION [INTERVAL] [TIMEOUT]
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from collections import Counter


def read_response(s: socket.socket, buf: bytearray) -> bytes:
    """One HTTP/1.1 response with Content-Length; returns its body, keeps what follows."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"status {head[:12]!r}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    buf[:] = rest[length:]
    return rest[:length]


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    conns, duration = int(sys.argv[3]), float(sys.argv[4])
    interval = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    timeout = float(sys.argv[6]) if len(sys.argv) > 6 else 5.0
    socks = [socket.create_connection((host, port), timeout=timeout) for _ in range(conns)]
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    lock = threading.Lock()
    lost: list[str] = []
    backends: Counter[str] = Counter()
    per_second: Counter[int] = Counter()
    start = time.monotonic()
    end = [start + duration]  # brought forward by SIGTERM
    stop = threading.Event()

    def halt(_sig: int, _frame: object) -> None:
        end[0] = min(end[0], time.monotonic())
        stop.set()

    signal.signal(signal.SIGTERM, halt)

    def drive(s: socket.socket) -> None:
        buf = bytearray()
        while not stop.is_set() and (now := time.monotonic()) < end[0]:
            try:
                s.sendall(request)
                body = read_response(s, buf).decode(errors="replace").strip()
            except (OSError, ConnectionError, ValueError) as e:
                with lock:
                    lost.append(f"{type(e).__name__}: {e} after {now - start:.1f} s")
                return
            with lock:
                backends[body] += 1
                per_second[int(time.monotonic() - start)] += 1
            if interval:
                stop.wait(max(0.0, now + interval - time.monotonic()))

    print("ready", flush=True)
    threads = [threading.Thread(target=drive, args=(s,)) for s in socks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + timeout + 5)
    seconds = int(end[0] - start)
    result = {
        "conns": conns,
        "start": start,
        "requests": sum(backends.values()),
        "lost": lost,
        "backends": dict(sorted(backends.items())),
        "per_second": [per_second.get(i, 0) for i in range(seconds)],
        "local": [f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in socks],
    }
    print(json.dumps(result), flush=True)
    for s in socks:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
