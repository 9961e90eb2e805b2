"""The pktswitch command line: run the switch, check a config, inspect a running switch."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import click

from pktswitch.control import protocol
from pktswitch.control.client import ControlError, NotRunning, call, stream
from pktswitch.control.config import ConfigError, load
from pktswitch.core.trace import HEADERS_SNAP

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


@contextlib.contextmanager
def _control_errors() -> Iterator[None]:
    """A switch that is not running: one line, exit 3; an error it answered: one line, exit 1."""
    try:
        yield
    except NotRunning as e:
        click.echo(str(e), err=True)
        sys.exit(protocol.EXIT_NOT_RUNNING)
    except ControlError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


def _ask(path: str, cmd: str, **args: Any) -> Any:
    with _control_errors():
        return call(path, cmd, **args)


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
    except (AlreadyRunning, SetupError, OSError) as e:
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
@click.option("--service", help="only this service's flows")
@click.option("--backend", help="only flows on this backend (by name)")
@click.option("--state", help="only flows in this TCP state (e.g. ESTABLISHED)")
@click.option("--limit", type=click.IntRange(min=1), help="at most this many (oldest first)")
@click.option("--watch", type=click.FloatRange(min=0.1), help="refresh every SECONDS until ^C")
@click.option("--json", "as_json", is_flag=True, help="a JSON array, a flow a line")
def flows(
    sock: str | None,
    config: str | None,
    service: str | None,
    backend: str | None,
    state: str | None,
    limit: int | None,
    watch: float | None,
    as_json: bool,
) -> None:
    """List the live flow table of a running switch, oldest flow first."""
    path = _socket(sock, config)
    args = {"service": service, "backend": backend, "state": state, "limit": limit}
    while True:
        rows = _ask(path, "flows", **args)
        rows.sort(key=lambda r: -r["age"])  # (the switch sends them in table order)
        if as_json:  # one flow a line: a big table's JSON in a third of indent's time
            text = "[\n" + ",\n".join(map(json.dumps, rows)) + "\n]" if rows else "[]"
        else:
            text = table(rows, FLOW_COLUMNS) + f"\n{len(rows)} flow(s)"
        if watch is None:
            click.echo(text)
            return
        click.echo("\x1b[H\x1b[2J" + text, nl=True)  # clear the screen, redraw in place
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return


BACKEND_COLUMNS = (
    ("service", "SERVICE"),
    ("backend", "NAME"),
    ("address", "ADDRESS"),
    ("weight", "WEIGHT"),
    ("health", "HEALTH"),
    ("active", "ACTIVE"),
    ("inactive", "INACTIVE"),
    ("total", "TOTAL"),
    ("bytes_in", "BYTES>"),
    ("bytes_out", "<BYTES"),
    ("rtt_syn_ms", "HANDSHAKE(ms)"),
    ("rt_data_ms", "RESPONSE(ms)"),
    ("health_reason", "WHY"),
)


@main.command()
@socket_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="one JSON array, same fields as the table")
def backends(sock: str | None, config: str | None, as_json: bool) -> None:
    """Backends of a running switch: weight, health, flows, bytes, handshake time."""
    rows = _ask(_socket(sock, config), "backends")
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for r in rows:  # three decimals: sub-millisecond handshakes are the normal case here
        for k in ("rtt_syn_ms", "rt_data_ms"):
            if r[k] is not None:
                r[k] = f"{r[k]:.3f}"
    click.echo(table(rows, BACKEND_COLUMNS))


@main.command()
@socket_option
@config_option
@click.option("--json", "as_json", is_flag=True)
def stats(sock: str | None, config: str | None, as_json: bool) -> None:
    """Counters of a running switch: packets, drops by reason, flows, SNAT ports."""
    s = _ask(_socket(sock, config), "stats")
    if as_json:
        click.echo(json.dumps(s, indent=1))
        return
    for k, v in s.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in sorted(v.items())) or "-"
        elif isinstance(v, list):
            v = ",".join(map(str, v)) or "-"
        click.echo(f"{k:22} {v}")


def _endpoint_text(d: dict[str, Any], changed: Sequence[str], mark: bool) -> str:
    def f(name: str, text: str) -> str:
        return text + ("*" if mark and name in changed else "")

    if "sport" not in d:
        return f"{d['len']} bytes, not TCP or UDP over IPv4"
    kind = f"[{f('flags', d['flags'])}]" if "flags" in d else "udp"
    return (
        f"{f('src', d['src'])}:{f('sport', str(d['sport']))} > "
        f"{f('dst', d['dst'])}:{f('dport', str(d['dport']))} {kind}"
    )


def trace_text(ev: dict[str, Any]) -> str:
    """Three lines per packet: what happened, the packet as read, the packet as written,
    with each field the switch changed marked by '*'."""
    clock = time.strftime("%H:%M:%S", time.localtime(ev["time"])) + f"{ev['time'] % 1:.6f}"[1:]
    tr = ev["transition"]
    where = f"{ev['service']}/{ev['backend']} flow {ev['flow']}" if ev["flow"] else "no flow"
    head = f"#{ev['seq']} {clock} {ev['verdict']}"
    head += f" {tr[0]} -> {tr[1]}" if tr else ""
    lines = [f"{head}  {where}"]
    b, a, ch = ev["before"], ev["after"], ev["changed"]

    def sums(d: dict[str, Any], mark: bool) -> str:
        l4 = "tcp" if "tcp_csum" in d else "udp" if "udp_csum" in d else None
        if l4 is None:
            return ""
        ip = f"{d['ip_csum']:#06x}" + ("*" if mark and "ip_csum" in ch else "")
        csum = f"{d[l4 + '_csum']:#06x}" + ("*" if mark and l4 + "_csum" in ch else "")
        return f"ip {ip} {l4} {csum}"

    before = _endpoint_text(b, ch, False)
    after = _endpoint_text(a, ch, True) if a else "(dropped)"
    width = max(len(before), len(after))
    lines.append(f"   in   {before.ljust(width)}  {sums(b, False)}".rstrip())
    lines.append(f"   out  {after.ljust(width)}  {sums(a, True) if a else ''}".rstrip())
    return "\n".join(lines)


@main.command()
@socket_option
@config_option
@click.option("--flow", "flow", metavar="CLIENT:PORT", help="follow one client connection")
@click.option("--count", type=click.IntRange(min=1), help="stop after this many packets")
@click.option("--pcap", type=click.Path(dir_okay=False, writable=True), help="also write a pcap")
@click.option(
    "--snaplen",
    type=click.IntRange(0, 65535),
    default=HEADERS_SNAP,
    show_default=True,
    help="bytes kept of each packet (the default: its headers)",
)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per packet")
def trace(
    sock: str | None,
    config: str | None,
    flow: str | None,
    count: int | None,
    pcap: str | None,
    snaplen: int,
    as_json: bool,
) -> None:
    """Show live what the switch does to each packet: before and after, changes marked.

    With --pcap, each packet is written twice to FILE, as read and as written (raw IP), cut
    to --snaplen bytes (a pcap keeps each packet's real length too).
    """
    import base64

    from pktswitch.control.pcap import PcapWriter

    path = _socket(sock, config)
    out = open(pcap, "wb") if pcap else None  # noqa: SIM115 (closed in finally)
    writer = PcapWriter(out) if out else None
    events = stream(path, "trace", flow=flow, count=count, snaplen=snaplen)
    summary: dict[str, Any] = {}
    try:
        with _control_errors():
            while True:
                try:
                    ev = next(events)
                except StopIteration as stop:
                    summary = stop.value or {}
                    break
                click.echo(json.dumps(ev) if as_json else trace_text(ev))
                if writer is not None:
                    raw = base64.b64decode(ev["raw_before"])
                    writer.write(ev["time"], raw, ev["before"]["len"])
                    if ev["raw_after"] is not None:
                        raw = base64.b64decode(ev["raw_after"])
                        writer.write(ev["time"], raw, ev["after"]["len"])
    except KeyboardInterrupt:
        pass
    finally:
        events.close()
        if out is not None:
            out.close()
    if summary and not as_json:
        lost = summary["dropped"] + summary["lost"]
        click.echo(
            f"{summary['sent']} packet(s) traced, {lost} lost to a full trace buffer", err=True
        )


@main.command()
@socket_option
@config_option
@click.option("--service", required=True, help="the service (its name in the config)")
@click.argument("client", metavar="CLIENT_IP[:PORT]")
@click.option("--json", "as_json", is_flag=True)
def which(sock: str | None, config: str | None, service: str, client: str, as_json: bool) -> None:
    """Which backend a new flow from CLIENT would get now, and why (nothing is sent)."""
    ip, _, port = client.partition(":")
    if port and not port.isdigit():
        raise click.BadParameter(f"expected CLIENT_IP[:PORT], got {client!r}", param_hint="CLIENT")
    r = _ask(_socket(sock, config), "which", service=service, client=ip, port=int(port or 0))
    if as_json:
        click.echo(json.dumps(r, indent=1))
    elif r["backend"] is None:
        click.echo(f"{service}: {r['reason']}")
    else:
        click.echo(f"{r['client']} -> {r['backend']} {r['address']}  ({r['reason']})")


@main.group()
def backend() -> None:
    """Change a backend of a running switch."""


@backend.command("set")
@socket_option
@config_option
@click.argument("target", metavar="SERVICE/BACKEND")
@click.option("--weight", type=click.IntRange(0, 65535), help="a new weight")
@click.option("--drain/--undrain", default=None, help="stop (or resume) giving it new flows")
def backend_set(
    sock: str | None, config: str | None, target: str, weight: int | None, drain: bool | None
) -> None:
    """Change a backend: its weight, or drain it. New flows follow; flows already there stay."""
    service, sep, name = target.partition("/")
    if not sep or not service or not name:
        raise click.BadParameter(f"expected SERVICE/BACKEND, got {target!r}", param_hint="TARGET")
    if weight is None and drain is None:
        raise click.UsageError("say what to change: --weight N, --drain or --undrain")
    path = _socket(sock, config)
    if weight is not None:
        r = _ask(path, "set_weight", service=service, backend=name, weight=weight)
        click.echo(f"{service}/{name}: weight {r['was']} -> {r['weight']}")
    if drain is not None:
        r = _ask(path, "drain", service=service, backend=name, on=drain)
        what = "draining" if drain else "no longer draining"
        click.echo(f"{service}/{name}: {what}, {r['flows']} flow(s) on it")


@main.command()
@socket_option
@config_option
@click.option("--json", "as_json", is_flag=True)
def reload(sock: str | None, config: str | None, as_json: bool) -> None:
    """Make a running switch read its config file again (as SIGHUP does). Established flows
    stay; a bad file is refused, the running config stays, and the exit status is 1."""
    r = _ask(_socket(sock, config), "reload")
    if as_json:
        click.echo(json.dumps(r, indent=1))
        return
    click.echo(f"reloaded {r['config']}: {len(r['changes']) or 'no'} change(s)")
    for line in r["changes"]:
        click.echo(f"  {line}")


@main.command("tcp-states")
@config_option
def tcp_states(config: str | None) -> None:
    """The TCP state table and timeouts the switch runs on (with CONFIG's overrides)."""
    from pktswitch.core.tcpstate import render

    click.echo(render(_load(config).timeouts if config else None))


if __name__ == "__main__":
    main()
