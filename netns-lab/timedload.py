"""Closed-loop load of new connections, each request timed: WORKERS clients, each sending one
HTTP request on a fresh connection, then the next as soon as the answer is in, for DURATION
seconds (bounded; at most LIMIT requests in all), each answered within 5 s or counted failed.
Prints one line per request: the monotonic time it started, its latency in seconds and the
backend that answered (or "fail REASON"); then "done".

    timedload.py HOST PORT WORKERS DURATION [LIMIT]
"""

from __future__ import annotations

import asyncio
import sys
import time

TIMEOUT = 5.0


async def one(host: str, port: int) -> str:
    writer = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
        if not data.startswith(b"HTTP/1.1 200"):
            return f"fail status {data[:12]!r}"
        return data.partition(b"\r\n\r\n")[2].decode(errors="replace").strip()
    except OSError as e:
        return f"fail {type(e).__name__}"
    finally:
        if writer is not None:
            writer.close()


async def worker(host: str, port: int, end: float, left: list[int], out: list[str]) -> None:
    while time.monotonic() < end and left[0] > 0:
        left[0] -= 1
        start = time.monotonic()
        try:
            got = await asyncio.wait_for(one(host, port), TIMEOUT)
        except TimeoutError:
            got = "fail timeout"
        out.append(f"{start:.6f} {time.monotonic() - start:.6f} {got}")


async def main(host: str, port: int, workers: int, duration: float, limit: int) -> None:
    out: list[str] = []
    end, left = time.monotonic() + duration, [limit]
    await asyncio.gather(*(worker(host, port, end, left, out) for _ in range(workers)))
    print("\n".join(out), flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    limit = int(sys.argv[5]) if len(sys.argv) > 5 else 200_000
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), limit))
