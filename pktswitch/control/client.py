"""The control client: one request, one reply, over the switch's Unix socket."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

from pktswitch.control.protocol import request


class NotRunning(Exception):
    """No switch answers on the socket."""


class ControlError(Exception):
    """The switch answered with an error."""


def call(path: str, cmd: str, timeout: float = 5.0, **args: Any) -> Any:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise NotRunning(f"pktswitch is not running (no answer on {path})") from e
        except PermissionError as e:
            raise NotRunning(f"cannot reach pktswitch on {path}: permission denied") from e
        s.sendall(request(cmd, **args))
        buf = bytearray()
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                raise NotRunning(f"pktswitch closed the connection on {path}")
            buf += chunk
    finally:
        s.close()
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "unknown error"))
    return reply["result"]


def stream(path: str, cmd: str, timeout: float | None = None, **args: Any) -> Iterator[Any]:
    """Yield the events of a streaming command; returns (StopIteration.value) its summary."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise NotRunning(f"pktswitch is not running (no answer on {path})") from e
        except PermissionError as e:
            raise NotRunning(f"cannot reach pktswitch on {path}: permission denied") from e
        s.sendall(request(cmd, **args))
        s.settimeout(timeout)
        f = s.makefile("rb")
        for line in f:
            reply = json.loads(line)
            if not reply.get("ok"):
                raise ControlError(reply.get("error", "unknown error"))
            if "event" in reply:
                yield reply["event"]
            else:
                return reply.get("result")
        raise NotRunning(f"pktswitch closed the connection on {path}")
    finally:
        s.close()
