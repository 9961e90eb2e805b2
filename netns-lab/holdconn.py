"""Open N keep-alive HTTP connections to HOST:PORT, make one request on each, print "ready",
then hold them open for SECONDS (bounded: it stops by itself) or until it is terminated."""

from __future__ import annotations

import socket
import sys
import time


def main() -> int:
    host, port, n, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    conns = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        answer = s.recv(4096).decode(errors="replace")
        body = answer.split("\r\n\r\n", 1)[-1].strip()
        local = s.getsockname()
        print(f"{local[0]}:{local[1]} -> {body}", flush=True)
        conns.append(s)
    print("ready", flush=True)
    time.sleep(seconds)
    for s in conns:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
