"""The datapath loop: drain the TUN device in batches, run timers, serve other readers.

One thread, one selector. When the TUN fd is readable the loop reads up to BATCH packets
(stopping early when the device is empty), hands each to the switch with the time it was
read, and writes back the ones it forwards. Between batches it expires idle flows and lets
other registered file descriptors (the control socket) do their bounded work, so nothing else
runs while a batch is in flight and the switch needs no locks.

With the native drain (pks_drain) the loop also sleeps in C: C waits in the selector's own
epoll set while the device is empty, forwards what arrives meanwhile, and hands the loop back
when another fd is ready, a timer is due, a signal came or C has events for Python. A
keep-alive request then costs the switch its read and write system calls and no turn of this
loop.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from pktswitch._native import ffi, lib

log = logging.getLogger(__name__)

BATCH = 64  # packets per wake-up before timers and control get a turn (as NAPI's dev_weight)
MAX_WAIT = 1.0  # longest sleep, so a stop request is seen within a second
MAX_LOGGED_ERRORS = 10  # internal errors logged with a traceback; the rest are only counted


class Core(Protocol):
    buf: bytearray

    def process(self, length: int, now: float) -> bool: ...
    def out_length(self) -> int: ...  # the bytes of buf to write after a True
    def count_drop(self, reason: str) -> None: ...
    def expire(self, now: float) -> int: ...
    def next_due(self) -> float | None: ...


@runtime_checkable
class NativeCore(Core, Protocol):
    """A core whose established flows C forwards by itself (pks_drain): the switch. The loop
    hands C the core's table, buffer and meta, and the core what C left to Python."""

    table: Any  # .tab: the native table pks_drain works on
    bufp: Any  # the cffi pointer to buf
    meta: Any  # pks_meta *
    vnet: int

    def count_fast(self, n: int) -> None: ...
    def after_native(self, verdict: int, now: float) -> bool: ...
    def take_events(self) -> None: ...
    def take_trace(self) -> None: ...


class Loop:
    def __init__(self, core: Core, tun_fd: int, clock: Callable[[], float] = time.monotonic):
        self.core = core
        # The established-flow loop runs in C (pks_drain) when the core is the switch and the
        # clock is the one C reads (CLOCK_MONOTONIC); tests with a fake clock use the Python
        # loop below, which does the same one packet at a time.
        native = isinstance(core, NativeCore) and clock is time.monotonic
        self.native_core: NativeCore | None = core if native else None  # type: ignore[assignment]
        self.native = native
        if self.native:
            self._result = ffi.new("pks_drain_result *")
        self.tun_fd = tun_fd
        self.clock = clock
        self.sel = selectors.DefaultSelector()
        self.sel.register(tun_fd, selectors.EVENT_READ, None)
        # C waits in this epoll set itself (pks_drain); other selectors: Python waits
        self._epfd = self.sel.fileno() if isinstance(self.sel, selectors.EpollSelector) else -1
        self.stopping = False
        self.write_errors: dict[str, int] = {}
        self.internal_errors = 0  # packets whose processing raised: a bug, logged and dropped
        self.largest_read = 0  # bytes: above the MTU, the TUN device hands over GSO packets
        self.idle: list[Callable[[], None]] = []  # run once per loop turn, after I/O
        # when idle callbacks next need a turn (e.g. a health check's timeout), if ever
        self.deadlines: list[Callable[[], float | None]] = []

    def add_reader(self, fd: int, callback: Callable[[int], None]) -> None:
        self.sel.register(fd, selectors.EVENT_READ, callback)

    def set_events(self, fd: int, events: int, callback: Callable[[int], None]) -> None:
        """Change what `fd` waits for (EVENT_READ, EVENT_WRITE or both)."""
        self.sel.modify(fd, events, callback)

    def remove(self, fd: int) -> None:
        self.sel.unregister(fd)

    def stop(self) -> None:
        self.stopping = True

    def _drain(self) -> None:
        if self.native_core is not None:
            self._drain_native(0.0)
            return
        core, fd, clock = self.core, self.tun_fd, self.clock
        buf = core.buf
        view = memoryview(buf)
        for _ in range(BATCH):
            try:
                n = os.readv(fd, [buf])
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if n > self.largest_read:
                self.largest_read = n
            # the clock per packet, not per batch: a SYN and its SYN-ACK often arrive in one
            # batch, and the handshake time measured between them must not read as zero
            self._decide(core.process, n, clock(), view)
        view.release()

    def _decide(
        self, decide: Callable[[int, float], bool], arg: int, now: float, view: memoryview
    ) -> None:
        """Python's decision on the packet in the buffer (view), and its write-back (as long
        as the core says: a packet may be answered with one of another length).
        `decide(arg, now)` is the core's process (arg: the length) or after_native (arg: the
        native verdict)."""
        try:
            forward = decide(arg, now)
        except Exception:
            # a bug must not take the datapath down with every flow on it: log, drop, go on
            self._internal_error("on a packet")
            self.core.count_drop("internal_error")
            return
        if forward:
            try:
                os.write(self.tun_fd, view[: self.core.out_length()])
            except OSError as e:
                # the kernel refused the packet (e.g. no route): count it, keep going
                self._count_write_errors(e.errno or 0, 1)

    def _count_write_errors(self, err: int, n: int) -> None:
        name = errno.errorcode.get(err, str(err))
        self.write_errors[name] = self.write_errors.get(name, 0) + n

    def _drain_native(self, wait: float) -> None:
        """Up to BATCH packets: C forwards those of established flows by itself and stops at
        the first one Python must see, which is decided here, and so on. When the device is
        empty C waits for it for up to `wait` seconds, in the selector's own epoll set, and
        comes back early when anything else in that set is ready."""
        sw = self.native_core
        assert sw is not None
        r, fd, view = self._result, self.tun_fd, memoryview(sw.buf)
        args = (sw.table.tab, fd, sw.bufp, len(sw.buf), sw.vnet)
        budget = BATCH
        while budget > 0:
            lib.pks_drain(*args, budget, sw.meta, self._epfd, wait, r)
            if r.forwarded:
                sw.count_fast(r.forwarded)
                budget -= r.forwarded
            if r.write_errors:
                self._count_write_errors(r.err, r.write_errors)
            if r.status != lib.PKS_D_PYTHON:
                if r.status == lib.PKS_D_ERROR:
                    what = "waiting on the loop's epoll set" if r.wait_failed else "reading"
                    raise OSError(r.err, f"{what} (TUN device): {os.strerror(r.err)}")
                break
            budget -= 1
            self._decide(sw.after_native, r.verdict, r.now, view)
            # Python's decision may have made work for the loop (a timer, a passive health
            # signal, a stream's events): no more sleeping in C before the loop has had a turn
            wait = 0.0
        tab = sw.table.tab
        if tab.ev_count:
            try:
                sw.take_events()  # before timers run: expiry reads the states C moved
            except Exception:
                self._internal_error("applying the native events")
        if tab.trace_used:
            try:
                sw.take_trace()  # what C recorded for whoever traces (core/tracing.py)
            except Exception:
                self._internal_error("taking the trace records")
        self.largest_read = max(self.largest_read, r.largest)
        view.release()

    def _deadline(self, when: Callable[[], float | None]) -> float | None:
        """A deadline callback's answer; one that raises asks for no wake-up (it is logged)."""
        try:
            return when()
        except Exception:
            self._internal_error("in a deadline callback")
            return None

    def _internal_error(self, where: str) -> None:
        self.internal_errors += 1
        if self.internal_errors <= MAX_LOGGED_ERRORS:
            log.exception("internal error %s; carrying on", where)

    def run(self) -> None:
        while not self.stopping:
            now = self.clock()
            dues = [
                d
                for d in (self.core.next_due(), *map(self._deadline, self.deadlines))
                if d is not None
            ]
            wait = min(MAX_WAIT, max(0.0, min(dues) - now)) if dues else MAX_WAIT
            if self._epfd >= 0 and self.native_core is not None:
                # the wait happens in C, which forwards whatever the device holds meanwhile
                # and returns when Python has a turn: timers, another fd, a signal, events
                self._drain_native(wait)
                wait = 0.0
            for key, events in self.sel.select(wait):
                if key.data is None:
                    self._drain()
                    continue
                try:
                    key.data(events)
                except Exception:
                    self._internal_error("in a control callback")
            try:
                self.core.expire(self.clock())
            except Exception:
                # a bug in expiry must not take the datapath down either: log, go on
                self._internal_error("in expiry")
            for callback in self.idle:
                try:
                    callback()
                except Exception:
                    self._internal_error("in an idle callback")
