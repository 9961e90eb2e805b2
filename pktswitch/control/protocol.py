"""The control protocol's vocabulary, shared by the daemon and the CLI.

One JSON object per line over a Unix socket. A request is {"cmd": NAME, "args": {...}};
a reply is {"ok": true, "result": ...} or {"ok": false, "error": "one line"}.
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_SOCKET = "/run/pktswitch/pktswitch.sock"
MAX_LINE = 64 * 1024  # a request longer than this is refused

EXIT_NOT_RUNNING = 3  # as supervisorctl and LSB status: the program is not running

COMMANDS = ("ping", "flows", "stats")


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def request(cmd: str, **args: Any) -> bytes:
    return encode({"cmd": cmd, "args": args})
