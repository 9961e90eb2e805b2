"""The TOML configuration file: read it, check every value, and return frozen dataclasses.

A bad config is the operator's fault, so nothing here guesses or repairs: the first problem
raises ConfigError, whose one line names the file, the dotted key ("service[0].backend[1].address")
and what was expected, with the value that was found. Unknown keys are refused too, so a typo
such as `shedular` is an error instead of a silently ignored setting.

    [switch]                          optional; `snat` is required when mode = "fullnat"
    [timeouts]                        optional; keys are TCP state names, values seconds
    [[service]]                       at least one
    [[service.backend]]               at least one per service

This module walks the document; its neighbours hold the parts, and their public names are
importable from here:
- config_values: the checks of single values, ConfigError
- config_schema: the dataclasses, and every key with its type and default (the one source of
  the reference in docs/operations.md, written by config_doc)
- config_reload: what a reload may change (reload_refusal)
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

from pktswitch.control import config_values as v
from pktswitch.control.config_reload import (
    MATCHED_BY,
    RELOADABLE_SWITCH_KEYS,
    RESTART_KEYS,
    SERVICE_RESTART_KEYS,
    reload_refusal,
)
from pktswitch.control.config_schema import (
    BACKEND_KEYS,
    DEFAULT_PROTOCOL,
    DEFAULT_SCHEDULER,
    DEFAULT_UDP_TIMEOUT,
    DEFAULT_WEIGHT,
    HEALTH_COUNT_MAX,
    HEALTH_KEYS,
    HTTP_STATUS,
    MAX_FLOWS_LIMIT,
    PER_CLIENT_KEYS,
    PROTOCOLS,
    SCHEDULER_OPTIONS,
    SERVICE_KEYS,
    SWITCH_KEYS,
    TIMEOUT_KEYS,
    TOP_KEYS,
    Backend,
    Config,
    Service,
    SwitchConfig,
)
from pktswitch.control.config_values import (
    IFNAME_MAX,
    MAX_CPU,
    MAX_PORT,
    RESERVED_TABLES,
    ROUTE_TABLE_MAX,
    SUN_PATH_MAX,
    ConfigError,
    Invalid,
)
from pktswitch.core.acl import Acl
from pktswitch.core.flows import default_half_open
from pktswitch.core.limits import BURST_MAX, RATE_MAX, ClientLimits
from pktswitch.core.switch import MAX_WEIGHT, MODES, SYN_COOKIES
from pktswitch.core.tcpstate import DEFAULT_TIMEOUTS, State
from pktswitch.sched.health_policy import CHECKS, ON_DOWN, HealthPolicy
from pktswitch.sched.registry import SCHEDULERS, make

__all__ = [
    "BACKEND_KEYS",
    "DEFAULT_WEIGHT",
    "HEALTH_KEYS",
    "IFNAME_MAX",
    "MATCHED_BY",
    "MAX_CPU",
    "MAX_FLOWS_LIMIT",
    "MAX_PORT",
    "PROTOCOLS",
    "RELOADABLE_SWITCH_KEYS",
    "RESERVED_TABLES",
    "RESTART_KEYS",
    "ROUTE_TABLE_MAX",
    "SCHEDULER_OPTIONS",
    "SERVICE_KEYS",
    "SERVICE_RESTART_KEYS",
    "SUN_PATH_MAX",
    "SWITCH_KEYS",
    "TIMEOUT_KEYS",
    "TOP_KEYS",
    "Backend",
    "Config",
    "ConfigError",
    "Service",
    "SwitchConfig",
    "load",
    "parse",
    "reload_refusal",
]


def load(path: str | os.PathLike[str]) -> Config:
    """Read and parse the config file at `path`; any failure is a ConfigError naming it."""
    name = os.fsdecode(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(name, "", f"a readable file, got {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(name, "", f"UTF-8 text, got {exc.reason} at byte {exc.start}") from None
    return parse(text, name)


def parse(text: str, path: str = "<string>") -> Config:
    """Parse and check TOML config text; `path` only names the source in errors."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"valid TOML, got a syntax error: {exc}") from None
    try:
        return _config(doc, path)
    except Invalid as exc:
        raise ConfigError(path, exc.key, exc.message) from None


def _switch(value: Any, key: str) -> tuple[SwitchConfig, list[tuple[str, str]]]:
    table = v.table(value, key, SWITCH_KEYS)
    d = SwitchConfig()

    def get(name: str, default: Any) -> tuple[Any, str]:
        return v.get(table, name, key, default), v.join(key, name)

    mode = v.choice(*get("mode", d.mode), MODES, "mode")
    snat = v.snat(*get("snat", []))
    if mode == "fullnat" and not snat:
        raise Invalid(
            v.join(key, "snat"),
            "at least one IPv4 address when mode = 'fullnat'",
            "none" if "snat" not in table else repr(table["snat"]),
        )
    max_flows = v.integer(*get("max_flows", d.max_flows), 1, MAX_FLOWS_LIMIT)
    switch = SwitchConfig(
        tun=v.ifname(*get("tun", d.tun)),
        mode=mode,
        snat=tuple(ip for ip, _ in snat),
        control=v.socket_path(*get("control", d.control)),
        max_flows=max_flows,
        max_half_open=v.integer(*get("max_half_open", default_half_open(max_flows)), 1, max_flows),
        route_table=v.route_table(*get("route_table", d.route_table)),
        snat_ports=v.port_range(*get("snat_ports", list(d.snat_ports))),
        offload=v.boolean(*get("offload", d.offload)),
        rps_cpus=v.cpus(*get("rps_cpus", d.rps_cpus)),
        hash_secret=v.secret(*get("hash_secret", None)),
        syn_cookies=v.choice(*get("syn_cookies", d.syn_cookies), SYN_COOKIES, "mode"),
    )
    return switch, snat


def _timeouts(value: Any, key: str) -> dict[State, float]:
    table = v.table(value, key, TIMEOUT_KEYS)
    timeouts = dict(DEFAULT_TIMEOUTS)
    for name, seconds in table.items():
        timeouts[TIMEOUT_KEYS[name]] = v.seconds(seconds, v.join(key, name))
    return timeouts


def _backend(value: Any, key: str) -> Backend:
    table = v.table(value, key, BACKEND_KEYS)
    ip, port = v.endpoint(v.get(table, "address", key), v.join(key, "address"))
    return Backend(
        name=v.name(v.get(table, "name", key), v.join(key, "name")),
        ip=ip,
        port=port,
        weight=v.integer(
            v.get(table, "weight", key, DEFAULT_WEIGHT), v.join(key, "weight"), 0, MAX_WEIGHT
        ),
    )


def _service(value: Any, key: str) -> Service:
    table = v.table(value, key, SERVICE_KEYS)
    name = v.name(v.get(table, "name", key), v.join(key, "name"))
    vip, port = v.endpoint(v.get(table, "vip", key), v.join(key, "vip"))
    protocol = v.choice(
        v.get(table, "protocol", key, DEFAULT_PROTOCOL),
        v.join(key, "protocol"),
        PROTOCOLS,
        "protocol",
    )
    scheduler = v.choice(
        v.get(table, "scheduler", key, DEFAULT_SCHEDULER),
        v.join(key, "scheduler"),
        SCHEDULERS,
        "scheduler",
    )
    options = tuple((o, table[o]) for o in SCHEDULER_OPTIONS if o in table)
    try:
        make(scheduler, **dict(options))
    except ValueError as e:
        bad = [o for o, _ in options if o in str(e)]
        err = Invalid(v.join(key, bad[0] if bad else "scheduler"), "", "")
        err.message = str(e)  # the scheduler's own words name the option and what it takes
        raise err from e
    backend_key = v.join(key, "backend")
    if "backend" not in table:
        raise Invalid(backend_key, f"at least one [[service.backend]] in {key}", "none")
    backends: list[Backend] = []
    names: dict[str, str] = {}
    addresses: dict[tuple[str, int], str] = {}
    for i, item in enumerate(v.array_of_tables(table["backend"], backend_key)):
        item_key = f"{backend_key}[{i}]"
        b = _backend(item, item_key)
        if b.name in names:
            raise Invalid(
                f"{item_key}.name",
                "a name unique in the service",
                f"{b.name!r} (also {names[b.name]})",
            )
        if (b.ip, b.port) in addresses:
            raise Invalid(
                f"{item_key}.address",
                "an address unique in the service",
                f"'{b.ip}:{b.port}' (also {addresses[b.ip, b.port]})",
            )
        names[b.name] = item_key
        addresses[b.ip, b.port] = item_key
        backends.append(b)
    health = _health(table["health"], v.join(key, "health")) if "health" in table else None
    if protocol == "udp" and health and health.check != "none" and not health.port:
        raise Invalid(
            v.join(v.join(key, "health"), "port"),
            f"the TCP port a UDP service's {health.check} check connects to (or check = none)",
            "none",
        )
    acl = None
    if "allow" in table or "deny" in table:
        acl = Acl(
            allow=v.prefixes(table.get("allow", []), v.join(key, "allow")),
            deny=v.prefixes(table.get("deny", []), v.join(key, "deny")),
        )
    per_client = None
    if "per_client" in table:
        per_client = _per_client(table["per_client"], v.join(key, "per_client"))
    udp_timeout = DEFAULT_UDP_TIMEOUT
    if "udp_timeout" in table:
        if protocol != "udp":
            raise Invalid(v.join(key, "udp_timeout"), 'a key of protocol "udp" only', protocol)
        udp_timeout = v.seconds(table["udp_timeout"], v.join(key, "udp_timeout"))
    one_packet = False
    if "one_packet" in table:
        if protocol != "udp":
            raise Invalid(v.join(key, "one_packet"), 'a key of protocol "udp" only', protocol)
        one_packet = v.boolean(table["one_packet"], v.join(key, "one_packet"))
    return Service(
        name, vip, port, protocol, scheduler, tuple(backends), options, health, acl, per_client,
        udp_timeout, one_packet,
    )  # fmt: skip


def _per_client(value: Any, key: str) -> ClientLimits:
    """[service.per_client]: max_flows or new_flows_per_second (or both), burst, prefix."""
    table = v.table(value, key, PER_CLIENT_KEYS)
    if "max_flows" not in table and "new_flows_per_second" not in table:
        raise Invalid(key, "max_flows or new_flows_per_second", "neither")
    rate = 0.0
    if "new_flows_per_second" in table:
        rate = v.rate(table["new_flows_per_second"], v.join(key, "new_flows_per_second"), RATE_MAX)
    elif "burst" in table:
        raise Invalid(v.join(key, "burst"), "new_flows_per_second beside it", "burst alone")
    d = ClientLimits()
    return ClientLimits(
        max_flows=v.integer(table["max_flows"], v.join(key, "max_flows"), 1, MAX_FLOWS_LIMIT)
        if "max_flows" in table
        else 0,
        new_flows_per_second=rate,
        burst=v.integer(table["burst"], v.join(key, "burst"), 1, BURST_MAX)
        if "burst" in table
        else 0,
        prefix=v.integer(v.get(table, "prefix", key, d.prefix), v.join(key, "prefix"), 1, 32),
    )


def _health(value: Any, key: str) -> HealthPolicy:
    """[service.health]: every key optional, HAProxy-like defaults (see sched/health_policy.py)."""
    table = v.table(value, key, HEALTH_KEYS)
    d = HealthPolicy()

    def get(name: str) -> tuple[Any, str]:
        return v.get(table, name, key, getattr(d, name)), v.join(key, name)

    policy = HealthPolicy(
        check=v.choice(*get("check"), CHECKS, "check"),
        interval=v.seconds(*get("interval")),
        timeout=v.seconds(*get("timeout")),
        rise=v.integer(*get("rise"), 1, HEALTH_COUNT_MAX),
        fall=v.integer(*get("fall"), 1, HEALTH_COUNT_MAX),
        path=v.string(*get("path")),
        status=v.integer(*get("status"), *HTTP_STATUS),
        passive=v.boolean(*get("passive")),
        syn_timeout=v.seconds(*get("syn_timeout")),
        eject=v.seconds(*get("eject")),
        eject_max=v.seconds(*get("eject_max")),
        on_down=v.choice(*get("on_down"), ON_DOWN, "policy"),
        slow_start=v.seconds_or_zero(*get("slow_start")),
        port=v.integer(table["port"], v.join(key, "port"), 1, 65535) if "port" in table else 0,
    )
    if not policy.path.startswith("/") or any(c.isspace() or ord(c) < 32 for c in policy.path):
        raise Invalid(
            v.join(key, "path"), "an HTTP path starting with '/', without spaces", repr(policy.path)
        )
    if policy.timeout > policy.interval:
        raise Invalid(v.join(key, "timeout"), "at most the interval", repr(policy.timeout))
    return policy


def _config(doc: dict[str, Any], path: str) -> Config:
    v.table(doc, "", TOP_KEYS)
    switch, snat = _switch(doc.get("switch", {}), "switch")
    timeouts = _timeouts(doc.get("timeouts", {}), "timeouts")
    if "service" not in doc:
        raise Invalid("service", "at least one [[service]]", "none")

    services: list[Service] = []
    names: dict[str, str] = {}
    vips: dict[tuple[str, int, str], str] = {}
    for i, item in enumerate(v.array_of_tables(doc["service"], "service")):
        key = f"service[{i}]"
        s = _service(item, key)
        if s.name in names:
            raise Invalid(
                f"{key}.name", "a name unique among services", f"{s.name!r} (also {names[s.name]})"
            )
        if (s.vip, s.port, s.protocol) in vips:
            raise Invalid(
                f"{key}.vip",
                "a (vip, protocol) unique among services",
                f"'{s.vip}:{s.port}' {s.protocol} (also {vips[s.vip, s.port, s.protocol]})",
            )
        names[s.name] = key
        vips[s.vip, s.port, s.protocol] = key
        services.append(s)

    _check_overlaps(services, snat)
    return Config(path, switch, timeouts, tuple(services))


def _check_overlaps(services: list[Service], snat: list[tuple[str, str]]) -> None:
    """VIPs, SNAT addresses and backends must not share an IPv4 address: packets would loop."""
    vip_of: dict[str, str] = {}
    for i, s in enumerate(services):
        vip_of.setdefault(s.vip, f"service[{i}]")
    snat_of = dict(snat)
    for ip, key in snat:
        if ip in vip_of:
            raise Invalid(key, "an address that is no VIP", f"{ip!r} (VIP of {vip_of[ip]})")
    for i, s in enumerate(services):
        for j, b in enumerate(s.backends):
            key = f"service[{i}].backend[{j}].address"
            got = f"'{b.ip}:{b.port}'"
            if b.ip in vip_of:
                raise Invalid(key, "an address that is no VIP", f"{got} (VIP of {vip_of[b.ip]})")
            if b.ip in snat_of:
                raise Invalid(
                    key, "an address that is no SNAT address", f"{got} (in {snat_of[b.ip]})"
                )
