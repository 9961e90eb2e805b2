"""The pktswitch command line: run the switch, check a config, inspect a running switch."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import click

from pktswitch.control import protocol
from pktswitch.control.client import ControlError, NotRunning, call
from pktswitch.control.config import ConfigError, load

EXIT_BAD_CONFIG = 2


def _load(path: str) -> Any:
    try:
        return load(path)
    except ConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_BAD_CONFIG)


def _socket(sock: str | None, config: str | None) -> str:
    if sock:
        return sock
    if config:
        return _load(config).switch.control
    return protocol.DEFAULT_SOCKET


def _ask(path: str, cmd: str, **args: Any) -> Any:
    try:
        return call(path, cmd, **args)
    except NotRunning as e:
        click.echo(str(e), err=True)
        sys.exit(protocol.EXIT_NOT_RUNNING)
    except ControlError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """An aligned text table; `columns` are (key, heading). Numbers align right."""
    cells = [[h for _, h in columns]]
    for r in rows:
        cells.append([_cell(r.get(k)) for k, _ in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    numeric = [all(isinstance(r.get(k), int | float) for r in rows) for k, _ in columns]
    lines = []
    for row in cells:
        parts = [
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(row, widths, numeric, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


socket_option = click.option(
    "-s", "--socket", "sock", help=f"control socket [default: {protocol.DEFAULT_SOCKET}]"
)
config_option = click.option(
    "-c", "--config", "config", type=click.Path(), help="read the control socket from this config"
)


@click.group()
def main() -> None:
    """pktswitch: a userspace L4 switch (load balancer) on a TUN device."""


@main.command()
@click.option("-c", "--config", "config", required=True, type=click.Path())
@click.option("-v", "--verbose", is_flag=True, help="log at debug level")
def run(config: str, verbose: bool) -> None:
    """Run the switch with CONFIG until SIGINT/SIGTERM."""
    from pktswitch.control import daemon
    from pktswitch.control.server import AlreadyRunning
    from pktswitch.io.tun import SetupError

    cfg = _load(config)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        daemon.run(cfg)
    except (AlreadyRunning, SetupError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


@main.command()
@click.option("-c", "--config", "config", required=True, type=click.Path())
def check(config: str) -> None:
    """Check CONFIG and print what it sets up."""
    cfg = _load(config)
    sw = cfg.switch
    click.echo(f"{config}: ok")
    snat = ", ".join(sw.snat) or "-"
    click.echo(f"  switch: tun {sw.tun}, mode {sw.mode}, snat {snat}, control {sw.control}")
    for s in cfg.services:
        backends = ", ".join(f"{b.name} {b.ip}:{b.port} w{b.weight}" for b in s.backends)
        click.echo(f"  service {s.name}: {s.protocol} {s.vip}:{s.port} {s.scheduler} -> {backends}")


FLOW_COLUMNS = (
    ("protocol", "PROTO"),
    ("client", "CLIENT"),
    ("vip", "VIP"),
    ("snat", "SNAT"),
    ("backend_address", "BACKEND"),
    ("backend", "NAME"),
    ("state", "STATE"),
    ("expires_in", "EXPIRES"),
    ("age", "AGE"),
    ("packets_in", "PKTS>"),
    ("bytes_in", "BYTES>"),
    ("packets_out", "<PKTS"),
    ("bytes_out", "<BYTES"),
    ("reason", "WHY"),
)


@main.command()
@socket_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="one JSON array, same fields as the table")
def flows(sock: str | None, config: str | None, as_json: bool) -> None:
    """List the live flow table of a running switch."""
    rows = _ask(_socket(sock, config), "flows")
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    rows.sort(key=lambda r: (r["service"], r["client"]))
    click.echo(table(rows, FLOW_COLUMNS))
    click.echo(f"{len(rows)} flow(s)")


@main.command()
@socket_option
@config_option
@click.option("--json", "as_json", is_flag=True)
def stats(sock: str | None, config: str | None, as_json: bool) -> None:
    """Counters of a running switch: packets, drops by reason, flows."""
    s = _ask(_socket(sock, config), "stats")
    if as_json:
        click.echo(json.dumps(s, indent=1))
        return
    for k, v in s.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in sorted(v.items())) or "-"
        click.echo(f"{k:20} {v}")


@main.command("tcp-states")
@config_option
def tcp_states(config: str | None) -> None:
    """The TCP state table and timeouts the switch runs on (with CONFIG's overrides)."""
    from pktswitch.core.tcpstate import render

    click.echo(render(_load(config).timeouts if config else None))


if __name__ == "__main__":
    main()
