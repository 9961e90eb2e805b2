"""A tiny HTTP server that answers every request with NAME after DELAY seconds: a backend that
is slower than the others, for showing least-response-time scheduling. Keep-alive supported.

    slowhttp.py PORT NAME DELAY
"""

from __future__ import annotations

import asyncio
import sys


async def serve(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str, delay: float
) -> None:
    body = f"{name}\n".encode()
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            await asyncio.sleep(delay)
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


async def main(port: int, name: str, delay: float) -> None:
    server = await asyncio.start_server(lambda r, w: serve(r, w, name, delay), "0.0.0.0", port)
    async with server:
        print(f"listening on {port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], float(sys.argv[3])))
