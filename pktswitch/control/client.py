"""The control client: one request over the switch's Unix socket, its reply or its events."""

from __future__ import annotations

import json
import socket
from collections.abc import Generator, Iterator
from typing import Any

from pktswitch.control.protocol import COMMANDS, request


class NotRunning(Exception):
    """No switch answers on the socket."""


class ControlError(Exception):
    """The switch answered with an error."""


def _replies(path: str, cmd: str, timeout: float | None, args: dict[str, Any]) -> Iterator[Any]:
    """Send one request; yield each reply object until the connection ends."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
            s.sendall(request(cmd, **args))
            for line in s.makefile("rb"):
                reply = json.loads(line)
                if not reply.get("ok"):
                    raise ControlError(reply.get("error", "unknown error"))
                yield reply
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise NotRunning(f"pktswitch is not running (no answer on {path})") from e
        except PermissionError as e:
            raise NotRunning(f"cannot reach pktswitch on {path}: permission denied") from e
        except TimeoutError as e:
            raise NotRunning(f"pktswitch does not answer on {path} (timed out)") from e
        raise NotRunning(f"pktswitch closed the connection on {path}")
    finally:
        s.close()


def stream(
    path: str, cmd: str, timeout: float | None = None, **args: Any
) -> Generator[Any, None, Any]:
    """Yield the events of a streaming command; its summary is the StopIteration value."""
    for reply in _replies(path, cmd, timeout, args):
        if "event" not in reply:
            return reply.get("result")
        yield reply["event"]


def call(path: str, cmd: str, timeout: float = 5.0, **args: Any) -> Any:
    """The command's result; for a streaming command, the list of all its events."""
    if COMMANDS[cmd].stream:
        return list(stream(path, cmd, timeout=timeout, **args))
    for reply in _replies(path, cmd, timeout, args):
        return reply["result"]
    raise AssertionError("unreachable: _replies raises when the connection ends")
