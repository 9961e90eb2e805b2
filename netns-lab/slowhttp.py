"""A tiny HTTP server that answers every request with NAME after DELAY seconds: a backend that
is slower than the others, for showing least-response-time scheduling. Keep-alive supported.
With LATER, SIGUSR1 makes DELAY LATER from then on: a backend that turns slow at a moment the
caller picks (netns-lab/bench_lrt.py).

    slowhttp.py PORT NAME DELAY [LATER]
"""

from __future__ import annotations

import asyncio
import signal
import sys


async def serve(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str, delay: list[float]
) -> None:
    body = f"{name}\n".encode()
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            await asyncio.sleep(delay[0])
            close = b"connection: close" in head.lower()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                + f"Content-Length: {len(body)}\r\n".encode()
                + (b"Connection: close\r\n" if close else b"")
                + b"\r\n"
                + body
            )
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int, name: str, delay: float, later: float | None) -> None:
    now = [delay]
    if later is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, now.__setitem__, 0, later)
    server = await asyncio.start_server(lambda r, w: serve(r, w, name, now), "0.0.0.0", port)
    async with server:
        print(f"listening on {port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    later = float(sys.argv[4]) if len(sys.argv) > 4 else None
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), later))
