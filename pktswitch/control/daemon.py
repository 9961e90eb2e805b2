"""`pktswitch run`: build the switch from a config, attach it to the host, run until a signal.

Order matters: the config is checked and the switch built before anything on the host is
touched; the control socket is claimed before the TUN device, so a second switch with the same
socket fails before it can disturb the first one's routes. Everything added is removed on
SIGINT/SIGTERM or on any error, in reverse order.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

from pktswitch.control.config import Config
from pktswitch.control.health import HealthMonitor
from pktswitch.control.probes import Prober
from pktswitch.control.server import ControlServer
from pktswitch.control.streams import FlowsStream, TraceStream
from pktswitch.core.switch import Switch
from pktswitch.io.loop import Loop
from pktswitch.io.tun import TunDevice

log = logging.getLogger("pktswitch")


def handlers(
    switch: Switch,
    loop: Loop | None,
    clock: Any = time.monotonic,
    prober: Prober | None = None,
    monitor: HealthMonitor | None = None,
) -> dict[str, Any]:
    """The control commands, answered from the live switch."""

    def stats(_args: dict[str, Any]) -> dict[str, Any]:
        s = switch.stats(clock())
        if loop is not None:
            s["write_errors"] = dict(loop.write_errors)
            s["internal_errors"] = loop.internal_errors
            s["largest_read_bytes"] = loop.largest_read
        if prober is not None:
            s["probes"] = {"sent": prober.sent, "failed": prober.failed}
        if monitor is not None:
            s["health_checks"] = {"sent": monitor.checks, "failed": monitor.failed}
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
    }


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def run(cfg: Config) -> None:
    switch = Switch.from_config(cfg)
    sw = cfg.switch
    loop: Loop | None = None

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        if loop is not None:
            loop.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
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
        tun.route([s.vip for s in cfg.services] + list(sw.snat))
        if sw.mode == "nat":
            tun.steer_replies(
                sw.route_table, [(b.ip, b.port) for s in cfg.services for b in s.backends]
            )
        loop = Loop(switch, tun.fd)
        timed = [b for svc in switch.services if svc.scheduler.name == "lrt" for b in svc.backends]
        if timed:
            prober = Prober(loop, timed, loop.clock)
        # always: besides checks, it applies drains, ejections ending and slow start
        monitor = HealthMonitor(loop, switch, loop.clock, tun.write)
        server.handlers = handlers(switch, loop, prober=prober, monitor=monitor)
        server.attach(loop)
        vips = ", ".join(f"{s.name} {s.vip}:{s.port}" for s in cfg.services)
        log.info(
            "pktswitch on %s (offloads %s), mode %s, services: %s; control %s",
            tun.name,
            "on" if tun.vnet else "off",
            sw.mode,
            vips,
            sw.control,
        )
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
        log.info("stopped: %s", switch.stats(time.monotonic()))
