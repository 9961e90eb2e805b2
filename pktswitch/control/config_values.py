"""The checks of single config values: each takes what TOML gave and the dotted key it came
from, and returns the value normalised or raises Invalid naming the key, what was expected and
what was found. Nothing here knows the document's layout (control/config.py walks it).

ConfigError is what leaves the config modules; Invalid is raised inside them and turned into
ConfigError by config.parse(), which adds the file name.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
from collections.abc import Iterable, Mapping
from typing import Any

IFNAME_MAX = 15  # Linux IFNAMSIZ is 16 bytes, including the terminating NUL
SUN_PATH_MAX = 107  # Linux sockaddr_un.sun_path is 108 bytes, including the terminating NUL
ROUTE_TABLE_MAX = 2**31 - 1  # Linux table ids are u32 (0 = unspecified); kept to a signed int
RESERVED_TABLES = {253: "default", 254: "main", 255: "local"}  # iproute2 rt_tables
MAX_PORT = 65_535
MAX_SECONDS = 2_147_483  # 24.8 days: HAProxy's largest timeout (2^31 - 1 ms); a C float holds it
NAME_MAX = 64  # bytes of a service's or backend's name
UNICAST = "a unicast IPv4 address, not in 0/8, 127/8, 224/4 or 240/4"
SNAT_MAX = 16  # SNAT addresses: what the C table holds (native/pks_snat.h, PKS_SNAT_ADDRS)
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
MAX_CPU = 8191  # the kernel's largest NR_CPUS
SECRET_BYTES = (16, 64)  # the hash secret: BLAKE2b's key is at most 64 bytes


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


class Invalid(Exception):
    """Raised by the checks below; parse() adds the file name and turns it into ConfigError."""

    def __init__(self, key: str, expected: str, got: str) -> None:
        super().__init__(key, expected, got)
        self.key = key
        self.message = f"{expected}, got {got}"


REQUIRED: Any = object()  # get()'s default for a key that must be there

_TOML_TYPES = {
    str: "string",
    int: "integer",
    float: "float",
    bool: "boolean",
    list: "array",
    dict: "table",
}


def show(value: Any) -> str:
    """The value as the operator wrote it, with its TOML type when that is the problem."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({_TOML_TYPES.get(type(value), type(value).__name__)})"


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def table(value: Any, key: str, allowed: Iterable[str]) -> dict[str, Any]:
    """A TOML table holding only `allowed` keys: the one place unknown keys are refused."""
    if not isinstance(value, dict):
        raise Invalid(key or "(top level)", "a table", show(value))
    allowed = tuple(allowed)
    for name in value:
        if name not in allowed:
            hint = difflib.get_close_matches(name, allowed, n=1)
            got = f"unknown key {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            raise Invalid(join(key, name), f"one of {', '.join(allowed)}", got)
    return value


def get(table: Mapping[str, Any], name: str, key: str, default: Any = REQUIRED) -> Any:
    if name in table:
        return table[name]
    if default is REQUIRED:
        raise Invalid(join(key, name), "a value", "nothing (this key is required)")
    return default


def array_of_tables(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise Invalid(key, f"an array of tables [[{key}]]", show(value))
    if not value:
        raise Invalid(key, f"at least one [[{key}]]", "none")
    return value


def string(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise Invalid(key, "a string", show(value))
    if not value.strip():
        raise Invalid(key, "a non-empty string", repr(value))
    return value


def choice(value: Any, key: str, choices: Iterable[str], what: str) -> str:
    value = string(value, key)
    choices = sorted(choices)
    if value not in choices:
        if len(choices) == 1:
            expected = f"{choices[0]!r} (the only {what} supported so far)"
        else:
            expected = f"one of {', '.join(map(repr, choices))}"
        raise Invalid(key, expected, repr(value))
    return value


def integer(value: Any, key: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(key, f"an integer {lo}..{hi}", show(value))
    if not lo <= value <= hi:
        raise Invalid(key, f"an integer {lo}..{hi}", repr(value))
    return value


def boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(key, "true or false", show(value))
    return value


def _positive(value: Any, key: str, hi: float, expected: str) -> float:
    """A finite number > 0, at most hi."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(key, expected, show(value))
    if not (0 < value <= hi and math.isfinite(value)):
        raise Invalid(key, expected, repr(value))
    return float(value)


def seconds(value: Any, key: str) -> float:
    return _positive(value, key, MAX_SECONDS, f"a number of seconds > 0 and at most {MAX_SECONDS}")


def rate(value: Any, key: str, hi: float) -> float:
    """A number > 0 (of things per second), at most hi."""
    return _positive(value, key, hi, f"a number > 0 and at most {hi:g}")


def name(value: Any, key: str) -> str:
    """A service's or backend's name: what the CLI addresses (`backend set SERVICE/BACKEND`)
    and the logs print, so letters, digits, '.', '_' and '-' only."""
    value = string(value, key)
    if len(value) > NAME_MAX or not set(value) <= NAME_CHARS:
        raise Invalid(key, f"a name of 1..{NAME_MAX} letters, digits, '.', '_' or '-'", repr(value))
    return value


def secret(value: Any, key: str) -> bytes | None:
    """The hashing schedulers' secret (None: left out). An error says its length, never
    what it is."""
    if value is None:
        return None
    lo, hi = SECRET_BYTES
    expected = f"a string of {lo}..{hi} bytes"
    if not isinstance(value, str):
        raise Invalid(key, expected, _TOML_TYPES.get(type(value), type(value).__name__))
    raw = value.encode()
    if not lo <= len(raw) <= hi:
        raise Invalid(key, expected, f"{len(raw)} bytes")
    return raw


def seconds_or_zero(value: Any, key: str) -> float:
    return 0.0 if value == 0 and not isinstance(value, bool) else seconds(value, key)


def ipv4(value: Any, key: str) -> str:
    """A unicast IPv4 address in dotted-quad form, returned normalised."""
    if not isinstance(value, str):
        raise Invalid(key, "an IPv4 address string", show(value))
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        raise Invalid(key, "an IPv4 address like '192.0.2.1'", repr(value)) from None
    top = int(addr) >> 24
    if top == 0 or top == 127 or top >= 224:  # this network, loopback, multicast, 240/4, broadcast
        raise Invalid(key, UNICAST, repr(value))
    return str(addr)


def endpoint(value: Any, key: str) -> tuple[str, int]:
    """'IPv4:PORT' -> (normalised address, port)."""
    expected = f"'IPv4:PORT' with port 1..{MAX_PORT}"
    if not isinstance(value, str):
        raise Invalid(key, f"a string {expected}", show(value))
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= MAX_PORT:
        raise Invalid(key, expected, repr(value))
    try:
        ip = ipv4(host, key)
    except Invalid:
        raise Invalid(key, f"{expected} and {UNICAST}", repr(value)) from None
    return ip, int(port)


def ifname(value: Any, key: str) -> str:
    """A Linux interface name, by the kernel's dev_valid_name() rules."""
    expected = f"an interface name of 1..{IFNAME_MAX} bytes without '/', ':' or whitespace"
    if not isinstance(value, str):
        raise Invalid(key, expected, show(value))
    if (
        not 1 <= len(value.encode()) <= IFNAME_MAX
        or value in (".", "..")
        or any(c in "/:" or c.isspace() for c in value)
    ):
        raise Invalid(key, expected, repr(value))
    return value


def socket_path(value: Any, key: str) -> str:
    value = string(value, key)
    if len(value.encode()) > SUN_PATH_MAX or "\0" in value:
        raise Invalid(key, f"a Unix socket path of at most {SUN_PATH_MAX} bytes", repr(value))
    return value


def route_table(value: Any, key: str) -> int:
    number = integer(value, key, 1, ROUTE_TABLE_MAX)
    if number in RESERVED_TABLES:
        reserved = ", ".join(f"{n} ({name})" for n, name in RESERVED_TABLES.items())
        raise Invalid(key, f"a routing table other than {reserved}", repr(value))
    return number


def snat(value: Any, key: str) -> list[tuple[str, str]]:
    """`snat` as a string or a list of strings -> [(address, key of that address)]."""
    if isinstance(value, str):
        return [(ipv4(value, key), key)]
    if not isinstance(value, list):
        raise Invalid(key, "an IPv4 address or a list of them", show(value))
    if len(value) > SNAT_MAX:
        raise Invalid(key, f"at most {SNAT_MAX} addresses", f"{len(value)} of them")
    seen: dict[str, str] = {}
    for i, item in enumerate(value):
        item_key = f"{key}[{i}]"
        ip = ipv4(item, item_key)
        if ip in seen:
            raise Invalid(item_key, "an address listed once", f"{ip!r} (also {seen[ip]})")
        seen[ip] = item_key
    return list(seen.items())


def cpus(value: Any, key: str) -> str | tuple[int, ...]:
    expected = f'"all", "off" or a list of CPU numbers 0..{MAX_CPU}'
    if value in ("all", "off"):
        return str(value)
    if not (isinstance(value, list) and value):
        raise Invalid(key, expected, show(value))
    seen: dict[int, str] = {}
    for i, cpu in enumerate(value):
        item_key = f"{key}[{i}]"
        integer(cpu, item_key, 0, MAX_CPU)
        if cpu in seen:
            raise Invalid(item_key, "a CPU listed once", f"{cpu} (also {seen[cpu]})")
        seen[cpu] = item_key
    return tuple(sorted(seen))  # a set: [3, 0] is [0, 3], also to a reload


def port_range(value: Any, key: str) -> tuple[int, int]:
    if not (isinstance(value, list) and len(value) == 2):
        raise Invalid(key, "a list [first, last] of two ports", show(value))
    lo = integer(value[0], f"{key}[0]", 1, MAX_PORT)
    hi = integer(value[1], f"{key}[1]", lo, MAX_PORT)
    return lo, hi


def prefixes(value: Any, key: str) -> tuple[str, ...]:
    """A list of IPv4 prefixes ('198.51.100.0/24', or an address for one host), normalised."""
    if not isinstance(value, list):
        raise Invalid(key, "a list of IPv4 prefixes like '198.51.100.0/24'", show(value))
    out: list[str] = []
    for i, item in enumerate(value):
        item_key = f"{key}[{i}]"
        if not isinstance(item, str):
            raise Invalid(item_key, "an IPv4 prefix string like '198.51.100.0/24'", show(item))
        try:
            net = ipaddress.IPv4Network(item)
        except ipaddress.NetmaskValueError:
            raise Invalid(item_key, "an IPv4 prefix with a mask 0..32", repr(item)) from None
        except ValueError:
            try:
                host = ipaddress.IPv4Network(item, strict=False)
            except ValueError:
                host = None
            if host is None:
                raise Invalid(
                    item_key, "an IPv4 prefix like '198.51.100.0/24'", repr(item)
                ) from None
            raise Invalid(
                item_key, f"a prefix without host bits (did you mean '{host}'?)", repr(item)
            ) from None
        out.append(str(net))
    return tuple(out)
