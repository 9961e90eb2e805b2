"""Health monitoring on the switch's loop: active checks, passive signals, weights, policies.

Active checks are non-blocking sockets from the switch's namespace to each backend's own
address: a TCP connect, or an HTTP GET whose status line must carry the expected status (to
the backend's port, or the policy's `port`: a UDP service's checks need one).
One check per backend at a time, every `interval`, failed after `timeout`; sockets close with
RST so checks leave no TIME_WAIT behind. The monitor also takes the switch's passive signals
(SYNs unanswered or answered with RST, UDP datagrams answered with ICMP port unreachable) and
confirms each with a check of its own at once (the service's check, or where it has none a
TCP connect, or for a UDP service a datagram that fails only if refused too): only a failed
confirmation ejects, for a client can make a SYN go unanswered or refused (one the backend
drops) but cannot make the switch's own connect fail. It recomputes effective weights (down,
ejected, draining, slow start), applies the down policy (keep or reset the flows) and logs
every change with its reason. It scans every backend at most every SCAN_EVERY seconds, and at
once when a passive signal waits: a busy loop turns a thousand times a second or more, and a
scan of 200 backends with checks takes some 170 microseconds.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
from collections.abc import Callable
from dataclasses import dataclass

from pktswitch.control.probes import connect_nonblocking, datagram_sent
from pktswitch.core.switch import ServiceState, Switch
from pktswitch.io.loop import Loop
from pktswitch.sched import health_policy as health
from pktswitch.sched.pool import BackendState

log = logging.getLogger("pktswitch.health")

SCAN_EVERY = 0.05  # seconds: how late a check, its timeout or a weight change may be seen

MAX_RESPONSE = 4096  # bytes of an HTTP check's answer read for its status line


@dataclass(eq=False)
class _Check:
    sock: socket.socket
    svc: ServiceState
    backend: BackendState
    started: float
    sent: bool = False
    answer: bytes = b""
    confirms: str = ""  # the passive signal this check confirms ("": a routine check)
    udp: bool = False  # a datagram to a UDP backend: fails only if refused (ICMP)


class HealthMonitor:
    def __init__(
        self,
        loop: Loop,
        switch: Switch,
        clock: Callable[[], float],
        write: Callable[[bytes], None],
    ) -> None:
        self.loop = loop
        self.switch = switch
        self.clock = clock
        self.write = write  # writes a packet into the TUN device (RSTs of the reset policy)
        self.inflight: dict[int, _Check] = {}
        # by backend (compared by identity), forgotten once a reload removed it
        self.next_check: dict[BackendState, float] = {}
        self.checks = 0
        self.failed = 0
        self.resets = 0
        # passive signals, and how their confirmations ended: ejected, or not (a check passed)
        self.signals = self.confirmed = self.unconfirmed = 0
        self.draining_left: dict[BackendState, int] = {}
        self._services: list[ServiceState] | None = None  # the set the two above are for
        self._next_scan = 0.0
        self._due: float | None = None  # the first check to start or time out, at the last scan
        loop.idle.append(self.tick)
        loop.deadlines.append(self.next_deadline)

    def next_deadline(self) -> float | None:
        """The next check to start or time out, once the next scan may run; ejections and
        slow start end within a second, the loop's longest sleep, which is close enough.
        Kept from the last scan, for the loop asks every turn: only a scan starts checks,
        and a check that ended since only makes the wake-up early."""
        return None if self._due is None else max(self._due, self._next_scan)

    # ------------------------------------------------------------------ the turn
    def tick(self) -> None:
        now = self.clock()
        if self.switch.services is not self._services:  # a reload: forget removed backends
            self._services = self.switch.services
            live = {b for svc in self._services for b in svc.backends}
            self.next_check = {b: t for b, t in self.next_check.items() if b in live}
            self.draining_left = {b: n for b, n in self.draining_left.items() if b in live}
            self._due = now  # a new backend's first check is due
        if now < self._next_scan and not self.switch.passive_pending(now):
            return
        self._next_scan = now + SCAN_EVERY
        for fd, c in list(self.inflight.items()):
            if now - c.started > c.svc.health.timeout:  # (a datagram not refused: passed)
                self._finish(fd, c.udp, "not refused" if c.udp else "timeout", now)
        busy = {c.backend for c in self.inflight.values()}
        times = []  # when each checked backend's next check is due (a service may stop checks)
        for svc in self.switch.services:
            if svc.health.check == "none":
                continue
            for b in svc.backends:
                if b not in busy and now >= self.next_check.get(b, 0.0):
                    self.next_check[b] = now + svc.health.interval
                    try:
                        self._start(svc, b, now)
                    except OSError as e:  # refused at once, or out of file descriptors
                        self._result(svc, b, False, e.strerror or str(e), now)
                times.append(self.next_check[b])
        times += [c.started + c.svc.health.timeout for c in self.inflight.values()]
        self._due = min(times, default=None)
        confirming = {c.backend for c in self.inflight.values() if c.confirms}
        for svc, b, reason in self.switch.take_passive(now):
            self.signals += 1
            if b in confirming or now < b.ejected_until:
                continue  # one confirmation at a time, none while it is out
            confirming.add(b)
            try:
                self._start(svc, b, now, confirms=reason)
            except OSError as e:
                self._result(svc, b, False, e.strerror or str(e), now, confirms=reason)
        for line in self.switch.refresh(now):
            log.info("%s", line)
        self._watch_drains()

    def _changed(self, svc: ServiceState, b: BackendState, what: str, now: float) -> None:
        if not what:
            return
        log.warning("%s/%s: %s", svc.name, b.name, what)
        self.switch.refresh(now)
        if svc.health.on_down == "reset" and not b.up:  # declared down by the active checks
            packets = self.switch.reset_backend(b, now)
            for p in packets:
                self.write(p)
            self.resets += len(packets)
            if packets:
                log.warning("%s/%s: reset %d flow(s)", svc.name, b.name, len(packets))

    def _watch_drains(self) -> None:
        for svc in self.switch.services:
            for b in svc.backends:
                if not b.draining:
                    self.draining_left.pop(b, None)
                    continue
                left = b.active + b.inactive
                if self.draining_left.get(b) != left:
                    self.draining_left[b] = left
                    if left == 0:
                        log.info("%s/%s: drained, no flow left", svc.name, b.name)

    # -------------------------------------------------------------------- checks
    def _start(self, svc: ServiceState, b: BackendState, now: float, confirms: str = "") -> None:
        """Start one check (confirming a passive signal, or routine); OSError (a connect
        refused at once, no file descriptors) is left to the caller, which counts it as a
        failed check."""
        self.checks += 1
        # a UDP service without a check confirms by a datagram, read for its refusal
        udp = svc.protocol == "udp" and svc.health.check == "none"
        s = (
            datagram_sent(b.ip, b.port)
            if udp
            else connect_nonblocking(b.ip, svc.health.port or b.port)
        )
        fd = s.fileno()
        self.inflight[fd] = _Check(s, svc, b, now, sent=udp, confirms=confirms, udp=udp)
        wait = selectors.EVENT_READ if udp else selectors.EVENT_WRITE
        self.loop.sel.register(fd, wait, lambda _ev, fd=fd: self._ready(fd))

    def _ready(self, fd: int) -> None:
        c = self.inflight[fd]
        now = self.clock()
        if c.udp:  # an answer passes; the backend's ICMP port unreachable fails
            try:
                c.sock.recv(MAX_RESPONSE)
            except ConnectionRefusedError:
                self._finish(fd, False, "ICMP port unreachable", now)
            except OSError as e:
                self._finish(fd, False, str(e), now)
            else:
                self._finish(fd, True, "answered", now)
            return
        if not c.sent:
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._finish(fd, False, os.strerror(err), now)
                return
            if c.svc.health.check != "http":  # (a confirmation where there is no check)
                self._finish(fd, True, "connected", now)
                return
            request = f"GET {c.svc.health.path} HTTP/1.0\r\nHost: {c.backend.ip}\r\n\r\n"
            try:
                c.sock.send(request.encode())
            except OSError as e:
                self._finish(fd, False, str(e), now)
                return
            c.sent = True
            self.loop.sel.modify(fd, selectors.EVENT_READ, lambda _ev, fd=fd: self._ready(fd))
            return
        try:
            data = c.sock.recv(MAX_RESPONSE)
        except OSError as e:
            self._finish(fd, False, str(e), now)
            return
        c.answer += data
        line, nl, _ = c.answer.partition(b"\r\n")
        if nl or not data or len(c.answer) >= MAX_RESPONSE:
            parts = line.split()
            http = len(parts) > 1 and parts[0].startswith(b"HTTP/") and parts[1].isdigit()
            status = int(parts[1]) if http else None
            want = c.svc.health.status
            ok = status == want
            self._finish(
                fd, ok, f"HTTP {status} (want {want})" if status else "no HTTP status", now
            )

    def _finish(self, fd: int, ok: bool, detail: str, now: float) -> None:
        c = self.inflight.pop(fd)
        self.loop.sel.unregister(fd)
        c.sock.close()
        self._result(c.svc, c.backend, ok, detail, now, c.confirms)

    def _result(
        self,
        svc: ServiceState,
        b: BackendState,
        ok: bool,
        detail: str,
        now: float,
        confirms: str = "",
    ) -> None:
        if not ok:
            self.failed += 1
        if not confirms:
            self._changed(svc, b, health.check_result(b, ok, svc.health, now, detail), now)
        elif ok:
            self.unconfirmed += 1
            log.info(
                "%s/%s: not ejected (%s): the switch's check passed", svc.name, b.name, confirms
            )
        else:
            self.confirmed += 1
            others = sum(
                o is not b and health.effective_weight(o, svc.health, now) > 0 for o in svc.backends
            )
            reason = f"{confirms}, and the switch's check failed ({detail})"
            self._changed(svc, b, health.passive_failure(b, svc.health, now, reason, others), now)

    def close(self) -> None:
        for fd in list(self.inflight):
            c = self.inflight.pop(fd)
            self.loop.sel.unregister(fd)
            c.sock.close()
