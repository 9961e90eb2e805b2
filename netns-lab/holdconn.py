"""Open N keep-alive HTTP connections to HOST:PORT, make one request on each, print "ready",
then hold them open for SECONDS (bounded: it stops by itself) or until it is terminated.

With a fifth argument "burst", the N connections are started together (non-blocking
connects, all SYNs out before any handshake is waited for), as a client that opens many at
once does; otherwise one after the other, each answered before the next is opened."""

from __future__ import annotations

import selectors
import socket
import sys
import time

CONNECT_TIMEOUT = 5.0  # seconds for all the connections to be made, and for each answer


def start_connects(host: str, port: int, n: int, source: str = "") -> list[socket.socket]:
    """n non-blocking connects (from `source`, else the default address): every SYN out."""
    conns = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        if source:
            s.bind((source, 0))
        s.connect_ex((host, port))
        conns.append(s)
    return conns


def await_connects(conns: list[socket.socket], timeout: float) -> list[socket.socket]:
    """Those of conns made within timeout (an error or no answer leaves one out)."""
    made = []
    with selectors.DefaultSelector() as sel:
        for s in conns:
            sel.register(s, selectors.EVENT_WRITE)
        deadline = time.monotonic() + timeout
        while sel.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                sel.unregister(s)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    made.append(s)
    return made


def connect_all(host: str, port: int, n: int) -> list[socket.socket]:
    """n connections whose SYNs all leave before any of them is waited for."""
    conns = start_connects(host, port, n)
    made = await_connects(conns, CONNECT_TIMEOUT)
    if len(made) < n:
        raise TimeoutError(f"{n - len(made)} of {n} connections to {host}:{port} not made")
    for s in conns:
        s.setblocking(True)
        s.settimeout(CONNECT_TIMEOUT)
    return conns


def main() -> int:
    host, port, n, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    burst = sys.argv[5:] == ["burst"]
    conns = connect_all(host, port, n) if burst else []
    for i in range(n):
        if burst:
            s = conns[i]
        else:
            s = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
            conns.append(s)
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        answer = s.recv(4096).decode(errors="replace")
        body = answer.split("\r\n\r\n", 1)[-1].strip()
        local = s.getsockname()
        print(f"{local[0]}:{local[1]} -> {body}", flush=True)
    print("ready", flush=True)
    time.sleep(seconds)
    for s in conns:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
