"""The TOML configuration file: read it, check every value, and return frozen dataclasses.

A bad config is the operator's fault, so nothing here guesses or repairs: the first problem
raises ConfigError, whose one line names the file, the dotted key ("service[0].backend[1].address")
and what was expected, with the value that was found. Unknown keys are refused too, so a typo
such as `shedular` is an error instead of a silently ignored setting.

    [switch]                          optional; `snat` is required when mode = "fullnat"
    [timeouts]                        optional; keys are TCP state names, values seconds
    [[service]]                       at least one
    [[service.backend]]               at least one per service
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pktswitch.core.acl import Acl
from pktswitch.core.flows import DEFAULT_MAX_FLOWS, default_half_open
from pktswitch.core.nat import DEFAULT_PORTS as DEFAULT_SNAT_PORTS
from pktswitch.core.switch import MAX_WEIGHT, MODES
from pktswitch.core.tcpstate import DEFAULT_TIMEOUTS, State, timeout_name
from pktswitch.sched.health_policy import CHECKS, ON_DOWN, HealthPolicy
from pktswitch.sched.registry import SCHEDULERS, make

PROTOCOLS = frozenset({"tcp"})

IFNAME_MAX = 15  # Linux IFNAMSIZ is 16 bytes, including the terminating NUL
SUN_PATH_MAX = 107  # Linux sockaddr_un.sun_path is 108 bytes, including the terminating NUL
MAX_FLOWS_LIMIT = 16_777_216  # 2**24 flows: 64 times conntrack's default
ROUTE_TABLE_MAX = 2**31 - 1  # Linux table ids are u32 (0 = unspecified); kept to a signed int
RESERVED_TABLES = {253: "default", 254: "main", 255: "local"}  # iproute2 rt_tables
MAX_PORT = 65_535
MAX_CPU = 8191  # the kernel's largest NR_CPUS
DEFAULT_WEIGHT = 1  # ipvsadm's default weight

SWITCH_KEYS = (
    "tun",
    "mode",
    "snat",
    "snat_ports",
    "control",
    "max_flows",
    "max_half_open",
    "route_table",
    "offload",
    "rps_cpus",
)
SCHEDULER_OPTIONS = ("hash_key", "table_size")  # passed to the scheduler that takes them
SERVICE_KEYS = (
    "name",
    "vip",
    "protocol",
    "scheduler",
    *SCHEDULER_OPTIONS,
    "allow",
    "deny",
    "health",
    "backend",
)
HEALTH_KEYS = tuple(f.name for f in dataclasses.fields(HealthPolicy))
BACKEND_KEYS = ("name", "address", "weight")
TOP_KEYS = ("switch", "timeouts", "service")
TIMEOUT_KEYS = {timeout_name(state): state for state in State}


# what a reload cannot change: the device, addresses and sizes the running switch was built on
RELOADABLE_SWITCH_KEYS = ("max_half_open",)
RESTART_KEYS = tuple(k for k in SWITCH_KEYS if k not in RELOADABLE_SWITCH_KEYS)


class ConfigError(Exception):
    """A bad config: the operator's fault. str(e) is '<file>: <key>: <expected>, got <found>'."""

    def __init__(self, path: str, key: str, message: str) -> None:
        super().__init__(path, key, message)
        self.path = path
        self.key = key
        self.message = message

    def __str__(self) -> str:
        where = f"{self.path}: {self.key}" if self.key else self.path
        return " ".join(f"{where}: {self.message}".splitlines())


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    ip: str
    port: int
    weight: int


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    vip: str
    port: int
    protocol: str
    scheduler: str
    backends: tuple[Backend, ...]
    options: tuple[tuple[str, Any], ...] = ()  # scheduler options, e.g. (("hash_key", "ip"),)
    health: HealthPolicy | None = None  # None: no checks, no passive signals
    acl: Acl | None = None  # None: every client may connect


@dataclass(frozen=True, slots=True)
class SwitchConfig:
    tun: str = "pks0"
    mode: str = "fullnat"
    snat: tuple[str, ...] = ()
    control: str = "/run/pktswitch/pktswitch.sock"
    max_flows: int = DEFAULT_MAX_FLOWS
    max_half_open: int = default_half_open(DEFAULT_MAX_FLOWS)
    route_table: int = 4242
    snat_ports: tuple[int, int] = DEFAULT_SNAT_PORTS
    offload: bool = (
        True  # TUN offloads (virtio_net_hdr, GSO, partial checksums) if the kernel agrees
    )
    # the CPUs where the kernel takes over what the switch writes (RPS on the TUN device):
    # "off" (its own CPU, in its write()), "all" online CPUs, or CPU numbers
    rps_cpus: str | tuple[int, ...] = "off"


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    switch: SwitchConfig
    timeouts: dict[State, float]
    services: tuple[Service, ...]


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
    except _Invalid as exc:
        raise ConfigError(path, exc.key, exc.message) from None


class _Invalid(Exception):
    """Raised by the checks below; parse() adds the file name and turns it into ConfigError."""

    def __init__(self, key: str, expected: str, got: str) -> None:
        super().__init__(key, expected, got)
        self.key = key
        self.message = f"{expected}, got {got}"


_REQUIRED: Any = object()

_TOML_TYPES = {
    str: "string",
    int: "integer",
    float: "float",
    bool: "boolean",
    list: "array",
    dict: "table",
}


def _show(value: Any) -> str:
    """The value as the operator wrote it, with its TOML type when that is the problem."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({_TOML_TYPES.get(type(value), type(value).__name__)})"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _table(value: Any, key: str, allowed: Iterable[str]) -> dict[str, Any]:
    """A TOML table holding only `allowed` keys: the one place unknown keys are refused."""
    if not isinstance(value, dict):
        raise _Invalid(key or "(top level)", "a table", _show(value))
    allowed = tuple(allowed)
    for name in value:
        if name not in allowed:
            hint = difflib.get_close_matches(name, allowed, n=1)
            got = f"unknown key {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            raise _Invalid(_join(key, name), f"one of {', '.join(allowed)}", got)
    return value


def _get(table: Mapping[str, Any], name: str, key: str, default: Any = _REQUIRED) -> Any:
    if name in table:
        return table[name]
    if default is _REQUIRED:
        raise _Invalid(_join(key, name), "a value", "nothing (this key is required)")
    return default


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(key, "a string", _show(value))
    if not value.strip():
        raise _Invalid(key, "a non-empty string", repr(value))
    return value


def _choice(value: Any, key: str, choices: Iterable[str], what: str) -> str:
    value = _str(value, key)
    choices = sorted(choices)
    if value not in choices:
        if len(choices) == 1:
            expected = f"{choices[0]!r} (the only {what} supported so far)"
        else:
            expected = f"one of {', '.join(map(repr, choices))}"
        raise _Invalid(key, expected, repr(value))
    return value


def _int(value: Any, key: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(key, f"an integer {lo}..{hi}", _show(value))
    if not lo <= value <= hi:
        raise _Invalid(key, f"an integer {lo}..{hi}", repr(value))
    return value


def _seconds(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(key, "a number of seconds > 0", _show(value))
    if not (value > 0 and math.isfinite(value)):
        raise _Invalid(key, "a number of seconds > 0", repr(value))
    return value


def _ipv4(value: Any, key: str) -> str:
    """A unicast IPv4 address in dotted-quad form, returned normalised."""
    if not isinstance(value, str):
        raise _Invalid(key, "an IPv4 address string", _show(value))
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        raise _Invalid(key, "an IPv4 address like '192.0.2.1'", repr(value)) from None
    if addr.is_unspecified or addr.is_multicast or addr == ipaddress.IPv4Address(2**32 - 1):
        raise _Invalid(key, "a unicast IPv4 address", repr(value))
    return str(addr)


def _endpoint(value: Any, key: str) -> tuple[str, int]:
    """'IPv4:PORT' -> (normalised address, port)."""
    expected = f"'IPv4:PORT' with port 1..{MAX_PORT}"
    if not isinstance(value, str):
        raise _Invalid(key, f"a string {expected}", _show(value))
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= MAX_PORT:
        raise _Invalid(key, expected, repr(value))
    try:
        ip = _ipv4(host, key)
    except _Invalid:
        raise _Invalid(key, f"{expected} and a unicast IPv4 address", repr(value)) from None
    return ip, int(port)


def _ifname(value: Any, key: str) -> str:
    """A Linux interface name, by the kernel's dev_valid_name() rules."""
    expected = f"an interface name of 1..{IFNAME_MAX} bytes without '/', ':' or whitespace"
    if not isinstance(value, str):
        raise _Invalid(key, expected, _show(value))
    if (
        not 1 <= len(value.encode()) <= IFNAME_MAX
        or value in (".", "..")
        or any(c in "/:" or c.isspace() for c in value)
    ):
        raise _Invalid(key, expected, repr(value))
    return value


def _socket_path(value: Any, key: str) -> str:
    value = _str(value, key)
    if len(value.encode()) > SUN_PATH_MAX or "\0" in value:
        raise _Invalid(key, f"a Unix socket path of at most {SUN_PATH_MAX} bytes", repr(value))
    return value


def _route_table(value: Any, key: str) -> int:
    table = _int(value, key, 1, ROUTE_TABLE_MAX)
    if table in RESERVED_TABLES:
        reserved = ", ".join(f"{n} ({name})" for n, name in RESERVED_TABLES.items())
        raise _Invalid(key, f"a routing table other than {reserved}", repr(value))
    return table


def _snat(value: Any, key: str) -> list[tuple[str, str]]:
    """`snat` as a string or a list of strings -> [(address, key of that address)]."""
    if isinstance(value, str):
        return [(_ipv4(value, key), key)]
    if not isinstance(value, list):
        raise _Invalid(key, "an IPv4 address or a list of them", _show(value))
    seen: dict[str, str] = {}
    for i, item in enumerate(value):
        item_key = f"{key}[{i}]"
        ip = _ipv4(item, item_key)
        if ip in seen:
            raise _Invalid(item_key, "an address listed once", f"{ip!r} (also {seen[ip]})")
        seen[ip] = item_key
    return list(seen.items())


def _switch(value: Any, key: str) -> tuple[SwitchConfig, list[tuple[str, str]]]:
    table = _table(value, key, SWITCH_KEYS)
    d = SwitchConfig()
    mode = _choice(_get(table, "mode", key, d.mode), _join(key, "mode"), MODES, "mode")
    snat = _snat(_get(table, "snat", key, []), _join(key, "snat"))
    if mode == "fullnat" and not snat:
        raise _Invalid(
            _join(key, "snat"),
            "at least one IPv4 address when mode = 'fullnat'",
            "none" if "snat" not in table else repr(table["snat"]),
        )
    max_flows = _int(
        _get(table, "max_flows", key, d.max_flows), _join(key, "max_flows"), 1, MAX_FLOWS_LIMIT
    )
    switch = SwitchConfig(
        tun=_ifname(_get(table, "tun", key, d.tun), _join(key, "tun")),
        mode=mode,
        snat=tuple(ip for ip, _ in snat),
        control=_socket_path(_get(table, "control", key, d.control), _join(key, "control")),
        max_flows=max_flows,
        max_half_open=_int(
            _get(table, "max_half_open", key, default_half_open(max_flows)),
            _join(key, "max_half_open"),
            1,
            max_flows,
        ),
        route_table=_route_table(
            _get(table, "route_table", key, d.route_table), _join(key, "route_table")
        ),
        snat_ports=_port_range(
            _get(table, "snat_ports", key, list(d.snat_ports)), _join(key, "snat_ports")
        ),
        offload=_bool(_get(table, "offload", key, d.offload), _join(key, "offload")),
        rps_cpus=_cpus(_get(table, "rps_cpus", key, d.rps_cpus), _join(key, "rps_cpus")),
    )
    return switch, snat


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(key, "true or false", _show(value))
    return value


def _cpus(value: Any, key: str) -> str | tuple[int, ...]:
    expected = f'"all", "off" or a list of CPU numbers 0..{MAX_CPU}'
    if value in ("all", "off"):
        return str(value)
    if not (isinstance(value, list) and value):
        raise _Invalid(key, expected, _show(value))
    seen: dict[int, str] = {}
    for i, cpu in enumerate(value):
        item_key = f"{key}[{i}]"
        _int(cpu, item_key, 0, MAX_CPU)
        if cpu in seen:
            raise _Invalid(item_key, "a CPU listed once", f"{cpu} (also {seen[cpu]})")
        seen[cpu] = item_key
    return tuple(sorted(seen))  # a set: [3, 0] is [0, 3], also to a reload


def _port_range(value: Any, key: str) -> tuple[int, int]:
    if not (isinstance(value, list) and len(value) == 2):
        raise _Invalid(key, "a list [first, last] of two ports", _show(value))
    lo = _int(value[0], f"{key}[0]", 1, MAX_PORT)
    hi = _int(value[1], f"{key}[1]", lo, MAX_PORT)
    return lo, hi


def _timeouts(value: Any, key: str) -> dict[State, float]:
    table = _table(value, key, TIMEOUT_KEYS)
    timeouts = dict(DEFAULT_TIMEOUTS)
    for name, seconds in table.items():
        timeouts[TIMEOUT_KEYS[name]] = _seconds(seconds, _join(key, name))
    return timeouts


def _array_of_tables(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Invalid(key, f"an array of tables [[{key}]]", _show(value))
    if not value:
        raise _Invalid(key, f"at least one [[{key}]]", "none")
    return value


def _backend(value: Any, key: str) -> Backend:
    table = _table(value, key, BACKEND_KEYS)
    ip, port = _endpoint(_get(table, "address", key), _join(key, "address"))
    return Backend(
        name=_str(_get(table, "name", key), _join(key, "name")),
        ip=ip,
        port=port,
        weight=_int(
            _get(table, "weight", key, DEFAULT_WEIGHT), _join(key, "weight"), 0, MAX_WEIGHT
        ),
    )


def _service(value: Any, key: str) -> Service:
    table = _table(value, key, SERVICE_KEYS)
    name = _str(_get(table, "name", key), _join(key, "name"))
    vip, port = _endpoint(_get(table, "vip", key), _join(key, "vip"))
    protocol = _choice(
        _get(table, "protocol", key, "tcp"), _join(key, "protocol"), PROTOCOLS, "protocol"
    )
    scheduler = _choice(
        _get(table, "scheduler", key, "rr"), _join(key, "scheduler"), SCHEDULERS, "scheduler"
    )
    options = tuple((o, table[o]) for o in SCHEDULER_OPTIONS if o in table)
    try:
        make(scheduler, **dict(options))
    except ValueError as e:
        bad = [o for o, _ in options if o in str(e)]
        err = _Invalid(_join(key, bad[0] if bad else "scheduler"), "", "")
        err.message = str(e)  # the scheduler's own words name the option and what it takes
        raise err from e
    backend_key = _join(key, "backend")
    if "backend" not in table:
        raise _Invalid(backend_key, f"at least one [[service.backend]] in {key}", "none")
    backends: list[Backend] = []
    names: dict[str, str] = {}
    addresses: dict[tuple[str, int], str] = {}
    for i, item in enumerate(_array_of_tables(table["backend"], backend_key)):
        item_key = f"{backend_key}[{i}]"
        b = _backend(item, item_key)
        if b.name in names:
            raise _Invalid(
                f"{item_key}.name",
                "a name unique in the service",
                f"{b.name!r} (also {names[b.name]})",
            )
        if (b.ip, b.port) in addresses:
            raise _Invalid(
                f"{item_key}.address",
                "an address unique in the service",
                f"'{b.ip}:{b.port}' (also {addresses[b.ip, b.port]})",
            )
        names[b.name] = item_key
        addresses[b.ip, b.port] = item_key
        backends.append(b)
    health = _health(table["health"], _join(key, "health")) if "health" in table else None
    acl = None
    if "allow" in table or "deny" in table:
        acl = Acl(
            allow=_prefixes(table.get("allow", []), _join(key, "allow")),
            deny=_prefixes(table.get("deny", []), _join(key, "deny")),
        )
    return Service(name, vip, port, protocol, scheduler, tuple(backends), options, health, acl)


def _prefixes(value: Any, key: str) -> tuple[str, ...]:
    """A list of IPv4 prefixes ('198.51.100.0/24', or an address for one host), normalised."""
    if not isinstance(value, list):
        raise _Invalid(key, "a list of IPv4 prefixes like '198.51.100.0/24'", _show(value))
    out: list[str] = []
    for i, item in enumerate(value):
        item_key = f"{key}[{i}]"
        if not isinstance(item, str):
            raise _Invalid(item_key, "an IPv4 prefix string like '198.51.100.0/24'", _show(item))
        try:
            net = ipaddress.IPv4Network(item)
        except ipaddress.NetmaskValueError:
            raise _Invalid(item_key, "an IPv4 prefix with a mask 0..32", repr(item)) from None
        except ValueError:
            try:
                host = ipaddress.IPv4Network(item, strict=False)
            except ValueError:
                host = None
            if host is None:
                raise _Invalid(
                    item_key, "an IPv4 prefix like '198.51.100.0/24'", repr(item)
                ) from None
            raise _Invalid(
                item_key, f"a prefix without host bits (did you mean '{host}'?)", repr(item)
            ) from None
        out.append(str(net))
    return tuple(out)


def _health(value: Any, key: str) -> HealthPolicy:
    """[service.health]: every key optional, HAProxy-like defaults (see sched/health_policy.py)."""
    table = _table(value, key, HEALTH_KEYS)
    d = HealthPolicy()

    def get(name: str) -> Any:
        return _get(table, name, key, getattr(d, name))

    policy = HealthPolicy(
        check=_choice(get("check"), _join(key, "check"), CHECKS, "check"),
        interval=_seconds(get("interval"), _join(key, "interval")),
        timeout=_seconds(get("timeout"), _join(key, "timeout")),
        rise=_int(get("rise"), _join(key, "rise"), 1, 100),
        fall=_int(get("fall"), _join(key, "fall"), 1, 100),
        path=_str(get("path"), _join(key, "path")),
        status=_int(get("status"), _join(key, "status"), 100, 599),
        passive=_bool(get("passive"), _join(key, "passive")),
        syn_timeout=_seconds(get("syn_timeout"), _join(key, "syn_timeout")),
        eject=_seconds(get("eject"), _join(key, "eject")),
        eject_max=_seconds(get("eject_max"), _join(key, "eject_max")),
        on_down=_choice(get("on_down"), _join(key, "on_down"), ON_DOWN, "policy"),
        slow_start=_seconds_or_zero(get("slow_start"), _join(key, "slow_start")),
    )
    if not policy.path.startswith("/") or any(c.isspace() or ord(c) < 32 for c in policy.path):
        raise _Invalid(
            _join(key, "path"), "an HTTP path starting with '/', without spaces", repr(policy.path)
        )
    if policy.timeout > policy.interval:
        raise _Invalid(_join(key, "timeout"), "at most the interval", repr(policy.timeout))
    return policy


def _seconds_or_zero(value: Any, key: str) -> float:
    return 0.0 if value == 0 and not isinstance(value, bool) else _seconds(value, key)


def _config(doc: dict[str, Any], path: str) -> Config:
    _table(doc, "", TOP_KEYS)
    switch, snat = _switch(doc.get("switch", {}), "switch")
    timeouts = _timeouts(doc.get("timeouts", {}), "timeouts")
    if "service" not in doc:
        raise _Invalid("service", "at least one [[service]]", "none")

    services: list[Service] = []
    names: dict[str, str] = {}
    vips: dict[tuple[str, int, str], str] = {}
    for i, item in enumerate(_array_of_tables(doc["service"], "service")):
        key = f"service[{i}]"
        s = _service(item, key)
        if s.name in names:
            raise _Invalid(
                f"{key}.name", "a name unique among services", f"{s.name!r} (also {names[s.name]})"
            )
        if (s.vip, s.port, s.protocol) in vips:
            raise _Invalid(
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
            raise _Invalid(key, "an address that is no VIP", f"{ip!r} (VIP of {vip_of[ip]})")
    for i, s in enumerate(services):
        for j, b in enumerate(s.backends):
            key = f"service[{i}].backend[{j}].address"
            got = f"'{b.ip}:{b.port}'"
            if b.ip in vip_of:
                raise _Invalid(key, "an address that is no VIP", f"{got} (VIP of {vip_of[b.ip]})")
            if b.ip in snat_of:
                raise _Invalid(
                    key, "an address that is no SNAT address", f"{got} (in {snat_of[b.ip]})"
                )


def reload_refusal(running: Config, new: Config) -> ConfigError | None:
    """Why `new` cannot replace `running` in place (a key only a restart changes), or None."""
    for k in RESTART_KEYS:
        was, now = getattr(running.switch, k), getattr(new.switch, k)
        if was != now:
            return ConfigError(
                new.path,
                f"switch.{k}",
                f"the running value {was!r} (it changes only with a restart), got {now!r}",
            )
    before = {s.name: s for s in running.services}
    for i, s in enumerate(new.services):
        was_svc = before.get(s.name)
        if was_svc is not None and (was_svc.vip, was_svc.port) != (s.vip, s.port):
            return ConfigError(
                new.path,
                f"service[{i}].vip",
                f"'{was_svc.vip}:{was_svc.port}' as running (a service keeps its VIP; add the "
                f"new one under another name), got '{s.vip}:{s.port}'",
            )
    return None
