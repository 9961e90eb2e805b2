"""The control server: answers JSON-line requests on a Unix socket between packet batches.

Every socket is non-blocking and every buffer bounded: a client that sends garbage gets an
error reply, one that stops reading has its connection closed once its reply backlog passes
MAX_BACKLOG, one that sends requests far ahead of the answers once they pass MAX_PENDING,
and none of them can hold up the datapath loop.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import selectors
import socket
import stat
import time
from collections.abc import Callable
from typing import Any, Protocol

from pktswitch.control.protocol import COMMANDS, MAX_LINE, BadRequest, check_args, encode
from pktswitch.io.loop import Loop

log = logging.getLogger(__name__)

MAX_BACKLOG = 16 * 1024 * 1024  # reply bytes queued for one client before it is dropped
MAX_PENDING = 4 * MAX_LINE  # request bytes one client may have waiting to be answered
MAX_CLIENTS = 64  # concurrent control clients; an operator needs a handful (supervisord: no cap)

# A stream takes STREAM_TURN of a loop turn at most, in steps of STREAM_CHUNK events (a flow
# takes about 12 us to describe and encode: a step about 0.1 ms), against the turn's BATCH of
# packets (io/loop.py, about 0.3 ms under load): a listing of a big table stretches out
# rather than hold packets back.
STREAM_CHUNK = 8  # events moved from a stream into a client's buffer at a time
STREAM_TURN = 0.0002  # seconds a stream may take of one loop turn (then packets go first)
STREAM_BACKLOG = 1024 * 1024  # a stream waits while its client has this much unsent


class Stream(Protocol):
    """What a streaming command's handler returns: events pulled between packet batches."""

    def poll(self, limit: int) -> list[Any]: ...
    def pending(self) -> bool: ...  # poll or done has something now: the loop must not sleep
    def done(self) -> bool: ...
    def summary(self) -> Any: ...
    def close(self) -> None: ...


Handler = Callable[[dict[str, Any]], Any]


class AlreadyRunning(Exception):
    pass


def _check_directory(directory: str) -> None:
    """The control socket's directory must be the switch's own user's (root's, run as root)
    and writable by nobody else: whoever can write there can put a socket of their own in
    the switch's place, or remove its socket, and answer every CLI call."""
    st = os.stat(directory)
    if st.st_uid != os.geteuid():
        raise PermissionError(
            f"{directory}: the control socket's directory belongs to uid {st.st_uid}, not to"
            f" the switch's user (uid {os.geteuid()}): refusing to start"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(
            f"{directory}: the control socket's directory is writable by others"
            f" (mode {stat.S_IMODE(st.st_mode):04o}): refusing to start (chmod go-w)"
        )


def _prepare_path(path: str) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    _check_directory(directory)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise AlreadyRunning(f"{path} exists and is not a socket: refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1)
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # a stale socket left by a switch that died: nobody listens
    except OSError as e:  # a switch too busy to take the probe (its backlog full) is alive
        raise AlreadyRunning(
            f"{path}: a switch may be running (the probe got {e!r}); remove the socket if none is"
        ) from None
    else:
        raise AlreadyRunning(f"a switch is already answering on {path}")
    finally:
        probe.close()


class _Conn:
    __slots__ = ("inbuf", "outbuf", "sock", "stream")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.stream: Stream | None = None

    def can_answer(self) -> bool:
        """A whole request line waits and the previous answer has left."""
        return self.stream is None and not self.outbuf and b"\n" in self.inbuf


class ControlServer:
    def __init__(self, path: str, handlers: dict[str, Handler]) -> None:
        unknown = set(handlers) - set(COMMANDS)
        if unknown:
            raise ValueError(f"handlers for unknown commands: {sorted(unknown)}")
        self.path = path
        self.handlers = handlers
        _prepare_path(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # root-only: the socket shows every client address
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.conns: dict[int, _Conn] = {}
        self.loop: Loop | None = None

    def attach(self, loop: Loop) -> None:
        self.loop = loop
        loop.add_reader(self.sock.fileno(), self._accept)
        loop.idle.append(self._pump)
        loop.deadlines.append(self._next_turn)

    def close(self) -> None:
        for fd in list(self.conns):
            self._drop(fd)
        if self.loop is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.loop.remove(self.sock.fileno())
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    # ------------------------------------------------------------------ sockets
    def _accept(self, _events: int) -> None:
        assert self.loop is not None
        try:
            s, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        if len(self.conns) >= MAX_CLIENTS:
            s.close()
            return
        s.setblocking(False)
        conn = _Conn(s)
        self.conns[s.fileno()] = conn
        fd = s.fileno()
        self.loop.add_reader(fd, functools.partial(self._ready, fd))

    def _drop(self, fd: int) -> None:
        conn = self.conns.pop(fd, None)
        if conn is None:
            return
        if conn.stream is not None:
            conn.stream.close()
            conn.stream = None
        if self.loop is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.loop.remove(fd)
        conn.sock.close()

    def _ready(self, fd: int, events: int) -> None:
        conn = self.conns.get(fd)
        if conn is None:
            return
        if events & selectors.EVENT_READ:
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._drop(fd)
                return
            if data == b"":
                self._drop(fd)
                return
            if data:
                conn.inbuf += data
                if len(conn.inbuf) > MAX_LINE and b"\n" not in conn.inbuf:
                    conn.outbuf += encode({"ok": False, "error": "request line too long"})
                    conn.inbuf.clear()
                elif len(conn.inbuf) > MAX_PENDING:  # requests sent far ahead of the answers
                    self._drop(fd)
                    return
        self._serve(fd, conn)

    def _serve(self, fd: int, conn: _Conn) -> None:
        """Answer one request, and only once the previous answer has left: a client that
        pipelines requests gets one per loop turn, between packet batches."""
        if conn.can_answer():
            line, _, rest = conn.inbuf.partition(b"\n")
            conn.inbuf = bytearray(rest)
            reply = self.dispatch(bytes(line))
            if isinstance(reply, dict):
                conn.outbuf += encode(reply)
            else:
                conn.stream = reply  # answered by _pump, a chunk per loop turn
        self._flush(fd, conn)

    def _flush(self, fd: int, conn: _Conn) -> None:
        if conn.outbuf:
            try:
                sent = conn.sock.send(conn.outbuf)
                del conn.outbuf[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop(fd)
                return
        if len(conn.outbuf) > MAX_BACKLOG:
            self._drop(fd)
            return
        assert self.loop is not None
        # while an answer is leaving, read nothing more from that client (backpressure)
        events = selectors.EVENT_WRITE if conn.outbuf else selectors.EVENT_READ
        self.loop.set_events(fd, events, functools.partial(self._ready, fd))

    def _next_turn(self) -> float | None:
        """0 (at once) while a stream has events to move or a pipelined request waits: the
        loop then does not sleep (their socket is not writable-waited in those cases)."""
        for conn in self.conns.values():
            if conn.can_answer():
                return 0.0
            stream = conn.stream
            if stream is not None and len(conn.outbuf) <= STREAM_BACKLOG and stream.pending():
                return 0.0
        return None

    def _pump(self) -> None:
        """Move waiting stream events into their clients' buffers, for STREAM_TURN at most
        per client per turn; a client that does not read leaves its events in the stream's
        own bounded queue."""
        for fd, conn in list(self.conns.items()):
            stream = conn.stream
            if stream is None:
                if conn.can_answer():
                    self._serve(fd, conn)  # the next pipelined request
                continue
            until = time.monotonic() + STREAM_TURN
            while len(conn.outbuf) <= STREAM_BACKLOG and stream.pending() and not stream.done():
                for event in stream.poll(STREAM_CHUNK):
                    conn.outbuf += encode({"ok": True, "event": event})
                if time.monotonic() >= until:
                    break
            if stream.done():
                conn.outbuf += encode({"ok": True, "result": stream.summary()})
                stream.close()
                conn.stream = None
            if conn.outbuf:
                self._flush(fd, conn)

    # ----------------------------------------------------------------- requests
    def dispatch(self, line: bytes) -> dict[str, Any] | Stream:
        """The reply to one request line, or the Stream that will answer it."""
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            return {"ok": False, "error": f"not JSON: {type(e).__name__}: {e}"[:200]}
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return {"ok": False, "error": 'expected an object like {"cmd": "flows"}'}
        cmd = req["cmd"]
        try:
            args = check_args(cmd, req.get("args") or {})
            handler = self.handlers.get(cmd)
            if handler is None:
                raise BadRequest(f"{cmd}: not served by this switch")
            result = handler(args)
        except (ValueError, TypeError, KeyError) as e:
            return {"ok": False, "error": str(e) if isinstance(e, BadRequest) else f"{cmd}: {e}"}
        except Exception as e:  # a bug: the client gets an error, the daemon goes on
            log.exception("control command %r failed", cmd)
            return {"ok": False, "error": f"{cmd}: internal error: {type(e).__name__}"}
        if COMMANDS[cmd].stream:
            return result
        return {"ok": True, "result": result}
