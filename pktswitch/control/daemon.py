"""`pktswitch run`: build the switch from a config, attach it to the host, run until a signal.

Order matters: the config is checked and the switch built before anything on the host is
touched; the control socket is claimed before the TUN device, so a second switch with the same
socket fails before it can disturb the first one's routes. Everything added is removed on
SIGINT/SIGTERM or on any error, in reverse order.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import time
from typing import Any

from pktswitch.control.config import Config, ConfigError, load, reload_refusal
from pktswitch.control.health_checks import HealthMonitor
from pktswitch.control.probes import Prober
from pktswitch.control.server import ControlServer
from pktswitch.control.streams import FlowsStream, TraceStream
from pktswitch.core.switch import Switch
from pktswitch.io.loop import Loop
from pktswitch.io.tun import SetupError, TunDevice, rps_targets

log = logging.getLogger("pktswitch")


class Reloader:
    """`pktswitch reload` and SIGHUP: read the config file again and apply it in place.

    The new file is parsed and checked in full before anything changes; a bad file, or one
    that changes what only a restart can (config.reload_refusal), is refused with its one-line
    error and the running config stays. Then the host side first (routes for new VIPs, nat
    mode's rules for new backends), then the switch (Switch.reconfigure): established flows,
    their backends and their counters are untouched.
    """

    def __init__(
        self,
        cfg: Config,
        switch: Switch,
        tun: TunDevice | None,
        clock: Any = time.monotonic,
        prober: Prober | None = None,
    ) -> None:
        self.cfg = cfg
        self.switch = switch
        self.tun = tun
        self.clock = clock
        self.prober = prober
        self.reloads = 0
        self.refused = 0

    def reload(self) -> dict[str, Any]:
        """Apply the file again; raises ValueError (the reason, in one line) if refused."""
        try:
            new = load(self.cfg.path)
            refusal = reload_refusal(self.cfg, new)
            if refusal is not None:
                raise refusal
            # host side first; on a failure what was added stays (recorded, removed at stop)
            if self.tun is not None:
                self.tun.route([s.vip for s in new.services])
                steer(self.tun, new)
        except (ConfigError, SetupError) as e:
            self.refused += 1
            log.error("reload refused, the running config stays: %s", e)
            raise ValueError(f"refused, the running config stays: {e}") from None
        changes = self.switch.reconfigure(new, self.clock())
        if self.prober is not None:
            self.prober.set_backends(lrt_backends(self.switch))
        self.cfg = new
        self.reloads += 1
        log.info("reloaded %s: %s", new.path, "; ".join(changes) or "no changes")
        return {"config": new.path, "changes": changes}


def steer(tun: TunDevice, cfg: Config) -> None:
    """What comes back from the backends into the device: in nat mode their replies (from
    each backend's address and port), in full NAT what is addressed to an SNAT address; only
    from the side the backends are on."""
    if cfg.switch.mode == "nat":
        endpoints = [(b.ip, b.port, s.protocol) for s in cfg.services for b in s.backends]
        tun.steer_replies(cfg.switch.route_table, endpoints)
    else:
        backends = [b.ip for s in cfg.services for b in s.backends]
        tun.steer_snat(cfg.switch.route_table, cfg.switch.snat, backends)


def lrt_backends(switch: Switch) -> list[Any]:
    """The backends that least-response-time scheduling needs probes for."""
    return [b for svc in switch.services if svc.scheduler.name == "lrt" for b in svc.backends]


def handlers(
    switch: Switch,
    loop: Loop | None,
    clock: Any = time.monotonic,
    prober: Prober | None = None,
    monitor: HealthMonitor | None = None,
    reloader: Reloader | None = None,
    tun: TunDevice | None = None,
) -> dict[str, Any]:
    """The control commands, answered from the live switch."""

    def reload(_args: dict[str, Any]) -> dict[str, Any]:
        if reloader is None:
            raise ValueError("this switch has no config file to reload")
        return reloader.reload()

    def stats(_args: dict[str, Any]) -> dict[str, Any]:
        s = switch.stats(clock())
        if tun is not None:
            s["device_qdisc"] = tun.qdisc
            s["rps_cpus"] = list(tun.rps_cpus)
        if loop is not None:
            s["write_errors"] = dict(loop.write_errors)
            s["internal_errors"] = loop.internal_errors
            s["largest_read_bytes"] = loop.largest_read
        if prober is not None:
            s["probes"] = {"sent": prober.sent, "failed": prober.failed}
        if monitor is not None:
            s["health_checks"] = {"sent": monitor.checks, "failed": monitor.failed}
            s["passive_signals"] = {
                "seen": monitor.signals,
                "confirmed": monitor.confirmed,
                "unconfirmed": monitor.unconfirmed,
            }
        if reloader is not None:
            s["reloads"] = {"applied": reloader.reloads, "refused": reloader.refused}
        return s

    return {
        "ping": lambda _args: "pong",
        "flows": lambda args: FlowsStream(switch, args, clock),
        "backends": lambda _args: switch.backends(clock()),
        "stats": stats,
        "trace": lambda args: TraceStream(switch, args, clock),
        "which": lambda args: switch.which(args["service"], args["client"], args.get("port", 0)),
        "set_weight": lambda args: switch.set_weight(
            args["service"], args["backend"], args["weight"], clock()
        ),
        "drain": lambda args: switch.set_drain(
            args["service"], args["backend"], args.get("on", True), clock()
        ),
        "reload": reload,
    }


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
# The switch makes and drops short-lived Python objects per connection (flow views, tuples of
# the new-flow path); with the default gen-0 threshold (700) the cyclic collector ran every few
# hundred connections, 2 % of the time under short connections. None of them form reference
# cycles, so collect rarely, and never the objects made during set-up.
GC_THRESHOLD = (100_000, 50, 100)


def run(cfg: Config) -> None:
    switch = Switch.from_config(cfg)
    sw = cfg.switch
    loop: Loop | None = None

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        if loop is not None:
            loop.stop()

    # SIGHUP: a byte into a pipe that the loop watches, so the reload runs on the loop, between
    # batches, like a `pktswitch reload` request (a handler must not touch the switch itself)
    hup_r, hup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def on_hup(_signum: int, _frame: Any) -> None:
        with contextlib.suppress(BlockingIOError):  # full: a reload is pending already
            os.write(hup_w, b"h")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_hup)
    # Set-up and clean-up run with stop signals held back, so that a Ctrl-C cannot land between
    # adding a route and recording it; one that arrives meanwhile is delivered when the loop runs.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    server: ControlServer | None = None
    tun: TunDevice | None = None
    prober: Prober | None = None
    monitor: HealthMonitor | None = None
    try:
        server = ControlServer(sw.control, {})
        tun = TunDevice(sw.tun, offload=sw.offload)
        switch.set_vnet(tun.vnet)
        tun.up()
        tun.spread_receive(rps_targets(sw.rps_cpus))
        tun.route([s.vip for s in cfg.services])
        steer(tun, cfg)
        loop = Loop(switch, tun.fd)
        # always: the services of a reload may need probes, that of a start none yet
        prober = Prober(loop, lrt_backends(switch), loop.clock, switch.sample)
        # always: besides checks, it applies drains, ejections ending and slow start
        monitor = HealthMonitor(loop, switch, loop.clock, tun.write)
        reloader = Reloader(cfg, switch, tun, loop.clock, prober)

        def hup_ready(_events: int) -> None:
            while True:
                try:
                    if not os.read(hup_r, 64):
                        break
                except BlockingIOError:
                    break
            log.info("SIGHUP: reloading %s", cfg.path)
            with contextlib.suppress(ValueError):  # logged; the running config stays
                reloader.reload()

        loop.add_reader(hup_r, hup_ready)
        server.handlers = handlers(
            switch, loop, prober=prober, monitor=monitor, reloader=reloader, tun=tun
        )
        server.attach(loop)
        vips = ", ".join(f"{s.name} {s.vip}:{s.port}" for s in cfg.services)
        log.info(
            "pktswitch on %s (offloads %s, qdisc %s, RPS %s), mode %s, services: %s; control %s",
            tun.name,
            "on" if tun.vnet else "off",
            tun.qdisc,
            f"on CPUs {','.join(map(str, tun.rps_cpus))}" if tun.rps_cpus else "off",
            sw.mode,
            vips,
            sw.control,
        )
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLD)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        loop.run()
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        if prober is not None:
            prober.close()
        if monitor is not None:
            monitor.close()
        if server is not None:
            server.close()
        if tun is not None:
            tun.close()
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        os.close(hup_r)
        os.close(hup_w)
        log.info("stopped: %s", switch.stats(time.monotonic()))
