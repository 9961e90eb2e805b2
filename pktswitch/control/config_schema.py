"""What a config holds: the frozen dataclasses config.parse() returns, and every key of every
table with its TOML type, its default and what it sets.

The key tables are the one source: the parser refuses any key they do not list (and names
them, in this order, when it does), and the reference in docs/operations.md is generated from
them (`python -m pktswitch.control.config_doc`). Defaults are read from the code that applies
them (SwitchConfig, HealthPolicy, DEFAULT_TIMEOUTS, the schedulers' own arguments), never
written out a second time.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

from pktswitch.control.config_values import (
    IFNAME_MAX,
    MAX_CPU,
    MAX_PORT,
    MAX_SECONDS,
    NAME_MAX,
    RESERVED_TABLES,
    ROUTE_TABLE_MAX,
    SECRET_BYTES,
    SUN_PATH_MAX,
)
from pktswitch.core.acl import Acl
from pktswitch.core.flows import DEFAULT_MAX_FLOWS, HALF_OPEN_SHARE, default_half_open
from pktswitch.core.limits import BURST_MAX, RATE_MAX, ClientLimits
from pktswitch.core.nat import DEFAULT_PORTS as DEFAULT_SNAT_PORTS
from pktswitch.core.service import DEFAULT_UDP_TIMEOUT
from pktswitch.core.switch import MAX_WEIGHT, MODES, SYN_COOKIES
from pktswitch.core.tcpstate import DEFAULT_TIMEOUTS, State, timeout_name
from pktswitch.sched import maglev
from pktswitch.sched.hashing import HASH_KEYS
from pktswitch.sched.health_policy import CHECKS, ON_DOWN, HealthPolicy
from pktswitch.sched.registry import SCHEDULERS
from pktswitch.sched.tables import MAX_IPHASH_BUCKETS

PROTOCOLS = frozenset({"tcp", "udp"})
DEFAULT_PROTOCOL = "tcp"
DEFAULT_SCHEDULER = "rr"  # HAProxy's default balance
MAX_FLOWS_LIMIT = 16_777_216  # 2**24 flows: 64 times conntrack's default
DEFAULT_WEIGHT = 1  # ipvsadm's default weight
HEALTH_COUNT_MAX = 100  # rise and fall: HAProxy takes any count; a hundred checks is plenty
HTTP_STATUS = (100, 599)


SECONDS = f"seconds > 0, at most {MAX_SECONDS}"  # a timeout or timer (config_values.seconds)
NAME = f"1..{NAME_MAX} letters, digits, '.', '_' or '-'"  # config_values.name


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
    health: HealthPolicy | None = None  # None: no checks, passive signals on (NO_HEALTH)
    acl: Acl | None = None  # None: every client may connect
    per_client: ClientLimits | None = None  # None: no client is limited
    udp_timeout: float = DEFAULT_UDP_TIMEOUT  # protocol "udp": a flow's idle seconds
    one_packet: bool = False  # protocol "udp": each datagram scheduled on its own


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
    # the key iphash and maglev hash clients with (None: a random one at each start); never
    # shown (repr, errors, views)
    hash_secret: bytes | None = field(default=None, repr=False)
    # SYN cookies: "auto" (while half the half-open share is taken), "on" (always), "off"
    syn_cookies: str = "auto"


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    switch: SwitchConfig
    timeouts: dict[State, float]
    services: tuple[Service, ...]


NO_DEFAULT: Any = object()  # a Key without a default: required, or only where `default` says


@dataclass(frozen=True, slots=True)
class Key:
    """One key of a table, as the reference shows it."""

    name: str
    type: str  # what the parser takes, in the words of its error messages
    what: str  # what it sets
    default: Any = NO_DEFAULT  # the value used when the key is left out
    default_text: str = ""  # said instead, where the default is not one value


def _quoted(words: Any) -> str:
    words = [f'"{w}"' for w in sorted(words)]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" or {words[-1]}"


def _option_defaults(option: str) -> str:
    """A scheduler option's default, per scheduler that takes it (from their signatures)."""
    out = []
    for name, factory in sorted(SCHEDULERS.items()):
        if option in getattr(factory, "OPTIONS", ()):
            default = inspect.signature(factory).parameters[option].default
            out.append(f"{name} {default!r}".replace("'", '"'))
    return ", ".join(out)


_SW = SwitchConfig()
_HP = HealthPolicy()
_reserved = ", ".join(map(str, RESERVED_TABLES))

TOP = (
    Key("switch", "table", "the device, the NAT mode, limits", default_text="its keys' defaults"),
    Key("timeouts", "table", "idle timeouts per TCP state", default_text="its keys' defaults"),
    Key("service", "array of tables", "the services; at least one"),
)

SWITCH = (
    Key("tun", f"interface name, 1..{IFNAME_MAX} bytes", "the TUN device to create", _SW.tun),
    Key(
        "mode",
        _quoted(MODES),
        "fullnat rewrites source and destination; nat only the destination",
        _SW.mode,
    ),
    Key(
        "snat",
        "IPv4 address, or an array of them",
        "the source addresses of full NAT",
        default_text="none; required when mode is fullnat",
    ),
    Key(
        "snat_ports",
        f"array [first, last] of ports 1..{MAX_PORT}",
        "the port range of each SNAT address",
        list(_SW.snat_ports),
    ),
    Key(
        "control",
        f"Unix socket path, at most {SUN_PATH_MAX} bytes",
        "the control socket the CLI talks to (root-only)",
        _SW.control,
    ),
    Key(
        "max_flows",
        f"integer 1..{MAX_FLOWS_LIMIT}",
        "flows the table holds (the default is conntrack's)",
        _SW.max_flows,
    ),
    Key(
        "max_half_open",
        "integer 1..max_flows",
        "flows whose handshake has not finished; beyond it a SYN evicts the oldest of them",
        default_text=f"max_flows / {HALF_OPEN_SHARE}",
    ),
    Key(
        "route_table",
        f"integer 1..{ROUTE_TABLE_MAX}, not {_reserved}",
        "the policy routing table that sends what the backends send into the device",
        _SW.route_table,
    ),
    Key(
        "offload",
        "boolean",
        "TUN offloads (virtio_net_hdr, GSO, partial checksums) where the kernel agrees",
        _SW.offload,
    ),
    Key(
        "rps_cpus",
        f'"off", "all" or an array of CPU numbers 0..{MAX_CPU}',
        "CPUs the kernel takes written packets on (RPS on the device)",
        _SW.rps_cpus,
    ),
    Key(
        "hash_secret",
        f"string of {SECRET_BYTES[0]}..{SECRET_BYTES[1]} bytes",
        "the secret iphash and maglev hash clients with, so that no client can pick its "
        "backend; switches that must agree (behind one ECMP route) share one",
        default_text="a random one at each start (hashed clients move on a restart)",
    ),
    Key(
        "syn_cookies",
        _quoted(SYN_COOKIES),
        "answer SYNs with SYN cookies: auto while half of max_half_open is taken",
        _SW.syn_cookies,
    ),
)

TIMEOUTS = tuple(
    Key(timeout_name(s), SECONDS, f"a flow idle in {s.name}", DEFAULT_TIMEOUTS[s]) for s in State
)

SCHEDULER_OPTIONS = ("hash_key", "table_size")  # passed to the scheduler that takes them
SERVICE = (
    Key("name", f"{NAME}, unique among services", "names the service (CLI, logs, reloads)"),
    Key("vip", "'IPv4:PORT'", "the address and port clients connect to"),
    Key("protocol", _quoted(PROTOCOLS), "the transport protocol", DEFAULT_PROTOCOL),
    Key(
        "udp_timeout",
        f'{SECONDS}; protocol "udp" only',
        "a UDP flow's idle timeout (IPVS's udp timeout)",
        DEFAULT_UDP_TIMEOUT,
    ),
    Key(
        "one_packet",
        'boolean; protocol "udp" only',
        "every datagram is scheduled on its own (IPVS's -o), its flow ending once answered",
        False,
    ),
    Key("scheduler", _quoted(SCHEDULERS), "how a new flow's backend is picked", DEFAULT_SCHEDULER),
    Key(
        "hash_key",
        _quoted(HASH_KEYS),
        "iphash, maglev: what a client is hashed on",
        default_text=_option_defaults("hash_key"),
    ),
    Key(
        "table_size",
        f"integer: iphash 1..{MAX_IPHASH_BUCKETS}, maglev a prime 2..{maglev.MAX_TABLE_SIZE}",
        "iphash: buckets; maglev: lookup table slots",
        default_text=_option_defaults("table_size"),
    ),
    Key(
        "allow",
        "array of IPv4 prefixes",
        "the clients that may connect",
        default_text="every client",
    ),
    Key(
        "deny",
        "array of IPv4 prefixes",
        "clients refused (deny wins over allow)",
        default_text="none",
    ),
    Key(
        "health",
        "table [service.health]",
        "active checks and passive signals",
        default_text="no checks; passive signals on",
    ),
    Key(
        "per_client",
        "table [service.per_client]",
        "limits on each client's flows and new flows per second",
        default_text="no limits",
    ),
    Key("backend", "array of tables [[service.backend]]", "the backends; at least one"),
)

_CL = ClientLimits()
PER_CLIENT = (
    Key(
        "max_flows",
        f"integer 1..{MAX_FLOWS_LIMIT}",
        "a client's open flows at most (not TIME_WAIT or CLOSE); a SYN beyond: client_max_flows",
        default_text="no limit",
    ),
    Key(
        "new_flows_per_second",
        f"number > 0, at most {RATE_MAX}",
        "a client's new flows per second at most, beyond burst (client_rate)",
        default_text="no limit",
    ),
    Key(
        "burst",
        f"integer 1..{BURST_MAX}",
        "new flows a client may open at once",
        default_text="new_flows_per_second rounded up",
    ),
    Key(
        "prefix",
        "integer 1..32",
        "a client is its address's first prefix bits (24: a /24 counts as one client)",
        _CL.prefix,
    ),
)

_HEALTH_KEYS = (
    Key("check", _quoted(CHECKS), "tcp connect, http GET of path expecting status, or none"),
    Key("interval", SECONDS, "between two checks of a backend"),
    Key(
        "timeout",
        f"{SECONDS} and at most interval",
        "a check not done by then failed",
    ),
    Key("rise", f"integer 1..{HEALTH_COUNT_MAX}", "checks passed in a row that bring it up"),
    Key("fall", f"integer 1..{HEALTH_COUNT_MAX}", "checks failed in a row that take it down"),
    Key("path", "HTTP path starting with '/'", "what check = http asks for"),
    Key("status", f"integer {HTTP_STATUS[0]}..{HTTP_STATUS[1]}", "the status it expects"),
    Key(
        "port",
        "integer 1..65535; required for a UDP service's tcp or http check",
        "the port tcp and http checks connect to",
        default_text="each backend's own",
    ),
    Key(
        "passive",
        "boolean",
        "a SYN refused (RST) or not answered in syn_timeout, or a UDP datagram refused (ICMP "
        "port unreachable), confirmed by a check of the switch's own, ejects",
    ),
    Key("syn_timeout", SECONDS, "how long a SYN may wait for its SYN-ACK"),
    Key("eject", SECONDS, "how long an ejection lasts, doubled for each one in a row"),
    Key("eject_max", SECONDS, "the longest ejection"),
    Key("on_down", _quoted(ON_DOWN), "reset: the switch sends a down backend's clients an RST"),
    Key(
        "slow_start",
        f"seconds >= 0, at most {MAX_SECONDS}",
        "a returning backend ramps up to its weight (0: off)",
    ),
)
HEALTH = tuple(dataclasses.replace(k, default=getattr(_HP, k.name)) for k in _HEALTH_KEYS)

BACKEND = (
    Key("name", f"{NAME}, unique in the service", "names the backend (CLI, logs, reloads)"),
    Key("address", "'IPv4:PORT', unique in the service", "where its flows go"),
    Key(
        "weight", f"integer 0..{MAX_WEIGHT}", "its share of new flows; 0 takes none", DEFAULT_WEIGHT
    ),
)

# (the table's name in the reference and in error messages, its keys)
TABLES = (
    ("(top level)", TOP),
    ("[switch]", SWITCH),
    ("[timeouts]", TIMEOUTS),
    ("[[service]]", SERVICE),
    ("[service.health]", HEALTH),
    ("[service.per_client]", PER_CLIENT),
    ("[[service.backend]]", BACKEND),
)

TOP_KEYS = tuple(k.name for k in TOP)
SWITCH_KEYS = tuple(k.name for k in SWITCH)
SERVICE_KEYS = tuple(k.name for k in SERVICE)
HEALTH_KEYS = tuple(k.name for k in HEALTH)
PER_CLIENT_KEYS = tuple(k.name for k in PER_CLIENT)
BACKEND_KEYS = tuple(k.name for k in BACKEND)
TIMEOUT_KEYS = {timeout_name(state): state for state in State}
