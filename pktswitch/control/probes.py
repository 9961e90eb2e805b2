"""Active probes for least-response-time scheduling: a TCP connect to a backend that has had
no measured traffic for a while, timed from the switch's namespace.

lrt learns response times from the flows it sends; a backend it stops sending to (because it
was slow) would keep its last, bad estimate forever. A probe is a handshake sample that lets
the estimate move again. One probe per backend at a time, non-blocking on the switch's loop,
closed with RST so it leaves no TIME_WAIT behind.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import struct
from collections.abc import Callable, Sequence

from pktswitch.io.loop import Loop
from pktswitch.sched.pool import BackendState

log = logging.getLogger(__name__)

PROBE_EVERY = 1.0  # seconds between looks for idle backends
PROBE_IDLE = 2.0  # a backend without a sample for this long gets a probe
PROBE_TIMEOUT = 1.0  # a connect not done by then counts as failed (HAProxy `timeout check`)


def connect_nonblocking(ip: str, port: int) -> socket.socket:
    """A TCP connect under way (done when the socket turns writable), set to close with RST
    so that it leaves no TIME_WAIT behind; OSError if it failed at once."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    rc = s.connect_ex((ip, port))
    if rc not in (0, errno.EINPROGRESS):
        s.close()
        raise OSError(rc, os.strerror(rc))
    return s


def datagram_sent(ip: str, port: int) -> socket.socket:
    """An empty UDP datagram sent to ip:port from a connected socket, which then reads the
    answer, or ConnectionRefusedError once an ICMP port unreachable came back; OSError if it
    could not be sent."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    try:
        s.connect((ip, port))
        s.send(b"")
    except OSError:
        s.close()
        raise
    return s


class Prober:
    def __init__(
        self,
        loop: Loop,
        backends: Sequence[BackendState],
        clock: Callable[[], float],
        sample: Callable[[BackendState, str, float, float], None],
    ) -> None:
        self.loop = loop
        self.sample = sample  # the switch's: the backend's smoothed time, also into C
        self.set_backends(backends)
        self.clock = clock
        self.next_look = 0.0
        self.inflight: dict[int, tuple[socket.socket, BackendState, float]] = {}
        self.sent = 0
        self.failed = 0
        loop.idle.append(self.tick)

    def set_backends(self, backends: Sequence[BackendState]) -> None:
        """The backends to keep an estimate for (one probe per endpoint); a probe under way
        to one that is gone finishes on its own."""
        self.backends = list({b.endpoint: b for b in backends}.values())

    def tick(self) -> None:
        now = self.clock()
        for fd, (_sock, _backend, started) in list(self.inflight.items()):
            if now - started > PROBE_TIMEOUT:
                self.failed += 1
                self._close(fd)
        if now < self.next_look:
            return
        self.next_look = now + PROBE_EVERY
        busy = {b.endpoint for _, b, _ in self.inflight.values()}
        for b in self.backends:
            if b.endpoint not in busy and now - b.last_sample_at >= PROBE_IDLE:
                self._start(b, now)

    def _start(self, b: BackendState, now: float) -> None:
        try:
            s = connect_nonblocking(b.ip, b.port)
        except OSError:
            self.failed += 1
            return
        fd = s.fileno()
        self.inflight[fd] = (s, b, now)
        self.sent += 1
        self.loop.sel.register(fd, selectors.EVENT_WRITE, lambda _ev, fd=fd: self._done(fd))

    def _done(self, fd: int) -> None:
        s, b, started = self.inflight[fd]
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            now = self.clock()
            self.sample(b, "probe", now - started, now)
        else:
            self.failed += 1
        self._close(fd)

    def _close(self, fd: int) -> None:
        s, _, _ = self.inflight.pop(fd)
        self.loop.sel.unregister(fd)
        s.close()

    def close(self) -> None:
        for fd in list(self.inflight):
            self._close(fd)
