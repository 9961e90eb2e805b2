"""A steady stream of new connections: one HTTP request on a fresh connection every INTERVAL
seconds for DURATION seconds (bounded), or until SIGTERM stops it sooner, each answered
within TIMEOUT or counted failed. Prints one line per request: monotonic time, "ok BACKEND"
or "fail REASON"; then "done".

    reqstream.py HOST PORT INTERVAL DURATION [TIMEOUT]
"""

from __future__ import annotations

import signal
import socket
import sys
import time


def one(host: str, port: int, timeout: float) -> str:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        body = data.partition(b"\r\n\r\n")[2].decode(errors="replace").strip()
        return f"ok {body}" if data.startswith(b"HTTP/1.1 200") else f"fail status {data[:12]!r}"
    except OSError as e:
        return f"fail {type(e).__name__}"


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    interval, duration = float(sys.argv[3]), float(sys.argv[4])
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 2.0
    end = [time.monotonic() + duration]
    signal.signal(signal.SIGTERM, lambda _sig, _frame: end.__setitem__(0, time.monotonic()))
    while (now := time.monotonic()) < end[0]:
        print(f"{now:.3f} {one(host, port, timeout)}", flush=True)
        time.sleep(max(0.0, now + interval - time.monotonic()))
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
