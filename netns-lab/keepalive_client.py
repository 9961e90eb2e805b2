"""One keep-alive HTTP connection driven from stdin: each line read makes one more request on
the same connection; prints "answer BACKEND", or how the connection ended ("reset", "closed",
"timeout") with the monotonic time. Ends at EOF on stdin or when the connection ends.

    keepalive_client.py HOST PORT
"""

from __future__ import annotations

import socket
import sys
import time


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    s = socket.create_connection((host, port), timeout=5)
    print(f"local {s.getsockname()[0]}:{s.getsockname()[1]}", flush=True)
    for _ in sys.stdin:
        try:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            data = s.recv(4096)
        except ConnectionResetError:
            print(f"reset {time.monotonic():.3f}", flush=True)
            return 0
        except TimeoutError:
            print(f"timeout {time.monotonic():.3f}", flush=True)
            return 0
        if not data:
            print(f"closed {time.monotonic():.3f}", flush=True)
            return 0
        body = data.partition(b"\r\n\r\n")[2].decode().strip()
        print(f"answer {body}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
