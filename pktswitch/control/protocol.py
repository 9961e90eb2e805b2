"""The control protocol's vocabulary, shared by the daemon and the CLI.

One JSON object per line over a Unix socket. A request is {"cmd": NAME, "args": {...}}; a reply
is {"ok": true, "result": ...} or {"ok": false, "error": "one line"}. A streaming command
(trace) answers with one {"ok": true, "event": ...} line per event until its count is reached
or the client goes away, then a final {"ok": true, "result": summary} line.

COMMANDS is the one registry: the server refuses what it does not list, with the argument
names and types it does; the CLI checks its requests against the same table before sending.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SOCKET = "/run/pktswitch/pktswitch.sock"
MAX_LINE = 64 * 1024  # a request longer than this is refused

EXIT_NOT_RUNNING = 3  # as supervisorctl and LSB status: the program is not running


@dataclass(frozen=True)
class Command:
    help: str
    args: dict[str, type] = field(default_factory=dict)
    stream: bool = False


COMMANDS: dict[str, Command] = {
    "ping": Command("is the switch answering"),
    "flows": Command(
        "the live flow table",
        {"service": str, "backend": str, "state": str, "limit": int},
        stream=True,
    ),
    "backends": Command("backends with weight, health, flows, bytes and response time"),
    "stats": Command("packet, drop, flow and SNAT counters"),
    "which": Command(
        "the backend a new flow would get, and why, without sending a packet",
        {"service": str, "client": str, "port": int},
    ),
    "set_weight": Command(
        "change a backend's weight: new flows follow, existing ones stay",
        {"service": str, "backend": str, "weight": int},
    ),
    "drain": Command(
        "drain a backend (on=true) or end its drain: no new flows, existing ones stay",
        {"service": str, "backend": str, "on": bool},
    ),
    "reload": Command(
        "read the config file again and apply it; established flows stay where they are"
    ),
    "trace": Command(
        "a live stream of what the switch does to each packet",
        {"flow": str, "count": int, "snaplen": int},
        stream=True,
    ),
}


class BadRequest(ValueError):
    pass


def check_args(cmd: str, args: Any) -> dict[str, Any]:
    """The request's args if COMMANDS allows them, else BadRequest naming what is wrong."""
    spec = COMMANDS.get(cmd)
    if spec is None:
        raise BadRequest(f"unknown command {cmd!r}; known: {', '.join(COMMANDS)}")
    if not isinstance(args, dict):
        raise BadRequest('"args" must be an object')
    for name, value in args.items():
        want = spec.args.get(name)
        if want is None:
            known = ", ".join(spec.args) or "none"
            raise BadRequest(f"{cmd}: unknown argument {name!r} (arguments: {known})")
        wrong_bool = isinstance(value, bool) and want is not bool
        if value is not None and (not isinstance(value, want) or wrong_bool):
            raise BadRequest(f"{cmd}: {name} must be {want.__name__}, got {value!r}")
    return {k: v for k, v in args.items() if v is not None}


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # one, made once: json.dumps makes one a call


def encode(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode() + b"\n"


def request(cmd: str, **args: Any) -> bytes:
    return encode({"cmd": cmd, "args": check_args(cmd, args)})
