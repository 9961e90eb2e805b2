from __future__ import annotations

from pathlib import Path

import pytest

from pktswitch.control.config import (
    Backend,
    Config,
    ConfigError,
    Service,
    SwitchConfig,
    load,
    parse,
)
from pktswitch.core.acl import Acl
from pktswitch.core.limits import ClientLimits
from pktswitch.core.tcpstate import DEFAULT_TIMEOUTS, State

FULL = """
[switch]
tun = "pks1"
mode = "fullnat"
snat = ["203.0.113.1", "203.0.113.2"]
control = "/tmp/pks.sock"
max_flows = 1000
route_table = 100

[timeouts]
established = 900
time_wait = 120.5

[[service]]
name = "web"
vip = "203.0.113.10:80"
protocol = "tcp"
scheduler = "rr"

[[service.backend]]
name = "A"
address = "192.0.2.1:80"
weight = 1

[[service.backend]]
name = "B"
address = "192.0.2.2:8080"
weight = 3

[[service]]
name = "tls"
vip = "203.0.113.10:443"

[[service.backend]]
name = "A"
address = "192.0.2.1:443"
weight = 0
"""

SWITCH = '[switch]\nsnat = ["203.0.113.1"]\n'
SERVICE = '[[service]]\nname = "web"\nvip = "203.0.113.10:80"\n'
BACKEND = '[[service.backend]]\nname = "A"\naddress = "192.0.2.1:80"\n'
MINIMAL = SWITCH + SERVICE + BACKEND


def backend(name: str = "A", address: str = "192.0.2.1:80", extra: str = "") -> str:
    return f'[[service.backend]]\nname = "{name}"\naddress = "{address}"\n{extra}'


def service(name: str = "web", vip: str = "203.0.113.10:80", extra: str = "") -> str:
    return f'[[service]]\nname = "{name}"\nvip = "{vip}"\n{extra}'


def test_the_snat_bound_is_what_c_holds() -> None:
    from pktswitch._native import lib

    from pktswitch.control.config_values import SNAT_MAX

    assert lib.PKS_SNAT_ADDRS == SNAT_MAX


def test_full_config_parses_to_exact_dataclasses() -> None:
    cfg = parse(FULL, "full.toml")
    timeouts = dict(DEFAULT_TIMEOUTS)
    timeouts[State.ESTABLISHED] = 900
    timeouts[State.TIME_WAIT] = 120.5
    assert cfg == Config(
        path="full.toml",
        switch=SwitchConfig(
            tun="pks1",
            mode="fullnat",
            snat=("203.0.113.1", "203.0.113.2"),
            control="/tmp/pks.sock",
            max_flows=1000,
            max_half_open=250,
            route_table=100,
        ),
        timeouts=timeouts,
        services=(
            Service(
                name="web",
                vip="203.0.113.10",
                port=80,
                protocol="tcp",
                scheduler="rr",
                backends=(
                    Backend(name="A", ip="192.0.2.1", port=80, weight=1),
                    Backend(name="B", ip="192.0.2.2", port=8080, weight=3),
                ),
            ),
            Service(
                name="tls",
                vip="203.0.113.10",
                port=443,
                protocol="tcp",
                scheduler="rr",
                backends=(Backend(name="A", ip="192.0.2.1", port=443, weight=0),),
            ),
        ),
    )


def test_defaults() -> None:
    cfg = parse(MINIMAL)
    assert cfg.path == "<string>"
    assert cfg.switch == SwitchConfig(snat=("203.0.113.1",))
    assert cfg.switch.tun == "pks0"
    assert cfg.switch.mode == "fullnat"
    assert cfg.switch.control == "/run/pktswitch/pktswitch.sock"
    assert cfg.switch.max_flows == 262144
    assert cfg.switch.route_table == 4242
    assert cfg.timeouts == DEFAULT_TIMEOUTS
    assert cfg.services == (
        Service("web", "203.0.113.10", 80, "tcp", "rr", (Backend("A", "192.0.2.1", 80, 1),)),
    )


def test_half_open_limit_defaults_to_a_quarter_of_max_flows_and_may_not_exceed_it() -> None:
    assert parse(MINIMAL).switch.max_half_open == 65536
    cfg = parse(SWITCH + "max_flows = 10\n" + SERVICE + BACKEND)
    assert cfg.switch.max_half_open == 2
    cfg = parse(SWITCH + "max_flows = 10\nmax_half_open = 10\n" + SERVICE + BACKEND)
    assert cfg.switch.max_half_open == 10
    with pytest.raises(ConfigError) as e:
        parse(SWITCH + "max_flows = 10\nmax_half_open = 11\n" + SERVICE + BACKEND, "c.toml")
    assert str(e.value) == "c.toml: switch.max_half_open: an integer 1..10, got 11"


def test_rps_cpus_all_off_or_a_list() -> None:
    """A list is a set of CPUs: [3, 0] and [0, 3] are one setting (a reload sees no change)."""
    assert parse(MINIMAL).switch.rps_cpus == "off"
    for text, want in (('"off"', "off"), ('"all"', "all"), ("[3, 0]", (0, 3))):
        cfg = parse(MINIMAL.replace("[switch]\n", f"[switch]\nrps_cpus = {text}\n"))
        assert cfg.switch.rps_cpus == want


def test_the_hash_secret_is_bytes_never_shown_and_random_when_left_out() -> None:
    from pktswitch.core.switch import Switch

    cfg = parse(MINIMAL.replace("[switch]\n", '[switch]\nhash_secret = "sixteen bytes..."\n'))
    assert cfg.switch.hash_secret == b"sixteen bytes..."
    assert "sixteen" not in repr(cfg)
    assert Switch.from_config(cfg).hash_secret == b"sixteen bytes..."
    assert parse(MINIMAL).switch.hash_secret is None
    one, two = (Switch.from_config(parse(MINIMAL)).hash_secret for _ in range(2))
    assert len(one) == len(two) == 32 and one != two
    with pytest.raises(ConfigError) as info:
        parse(MINIMAL.replace("[switch]\n", '[switch]\nhash_secret = "not-this-one"\n'))
    assert "not-this" not in str(info.value)


def test_acl_prefixes_are_normalised() -> None:
    extra = 'allow = ["198.51.100.0/24", "192.0.2.9"]\ndeny = ["198.51.100.7/32"]\n'
    cfg = parse(SWITCH + service(extra=extra) + BACKEND)
    assert cfg.services[0].acl == Acl(
        allow=("198.51.100.0/24", "192.0.2.9/32"), deny=("198.51.100.7/32",)
    )
    assert parse(MINIMAL).services[0].acl is None
    assert parse(SWITCH + service(extra="deny = []\n") + BACKEND).services[0].acl == Acl()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            'allow = "198.51.100.0/24"',
            "service[0].allow: a list of IPv4 prefixes like '198.51.100.0/24', "
            "got '198.51.100.0/24' (string)",
        ),
        (
            'deny = ["198.51.100.5/24"]',
            "service[0].deny[0]: a prefix without host bits (did you mean '198.51.100.0/24'?), "
            "got '198.51.100.5/24'",
        ),
        (
            'deny = ["198.51.100.0/33"]',
            "service[0].deny[0]: an IPv4 prefix with a mask 0..32, got '198.51.100.0/33'",
        ),
        (
            'allow = ["web"]',
            "service[0].allow[0]: an IPv4 prefix like '198.51.100.0/24', got 'web'",
        ),
        (
            "allow = [24]",
            "service[0].allow[0]: an IPv4 prefix string like '198.51.100.0/24', got 24 (integer)",
        ),
    ],
)
def test_bad_acl_names_the_entry(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(SWITCH + service(extra=extra + "\n") + BACKEND, "c.toml")
    assert str(e.value) == "c.toml: " + message


def test_per_client_limits_parse_with_their_defaults() -> None:
    cfg = parse(MINIMAL + "[service.per_client]\nnew_flows_per_second = 2.5\n")
    limits = cfg.services[0].per_client
    assert limits == ClientLimits(new_flows_per_second=2.5)
    assert limits is not None and limits.burst_or_default == 3
    cfg = parse(MINIMAL + "[service.per_client]\nmax_flows = 7\nprefix = 24\n")
    assert cfg.services[0].per_client == ClientLimits(max_flows=7, prefix=24)
    assert parse(MINIMAL).services[0].per_client is None


def test_nat_mode_needs_no_switch_table_but_mode() -> None:
    cfg = parse('[switch]\nmode = "nat"\n' + SERVICE + BACKEND)
    assert cfg.switch == SwitchConfig(mode="nat")


def test_snat_may_be_a_single_string() -> None:
    cfg = parse('[switch]\nsnat = "203.0.113.1"\n' + SERVICE + BACKEND)
    assert cfg.switch.snat == ("203.0.113.1",)


def test_timeouts_override_one_and_keep_the_rest() -> None:
    cfg = parse(MINIMAL + "[timeouts]\nsyn_recv = 5\n")
    assert cfg.timeouts[State.SYN_RECV] == 5
    assert set(cfg.timeouts) == set(State)
    for state in State:
        if state is not State.SYN_RECV:
            assert cfg.timeouts[state] == DEFAULT_TIMEOUTS[state]
    assert DEFAULT_TIMEOUTS[State.SYN_RECV] == 60


BAD = [
    # (id, config text, dotted key, fragment of the message)
    ("syntax", MINIMAL + "weight = \n", "", "line 9, column 10"),
    ("syntax-key", "[switch\n", "", "line 1"),
    ("top-level-unknown", MINIMAL + "[servce]\n", "servce", "did you mean 'service'"),
    ("switch-unknown", '[switch]\nsnat = "203.0.113.1"\ntunn = "x"\n' + SERVICE + BACKEND,
     "switch.tunn", "one of tun, mode, snat"),
    ("service-unknown", SWITCH + service(extra='shedular = "rr"\n') + BACKEND,
     "service[0].shedular", "did you mean 'scheduler'"),
    ("backend-unknown", SWITCH + SERVICE + backend(extra="wieght = 2\n"),
     "service[0].backend[0].wieght", "one of name, address, weight"),
    ("switch-not-table", 'switch = "x"\n' + SERVICE + BACKEND, "switch", "a table, got 'x'"),
    ("tun-too-long", '[switch]\nmode = "nat"\ntun = "abcdefghijklmnop"\n' + SERVICE + BACKEND,
     "switch.tun", "1..15 bytes"),
    ("tun-slash", '[switch]\nmode = "nat"\ntun = "a/b"\n' + SERVICE + BACKEND,
     "switch.tun", "without '/'"),
    ("tun-space", '[switch]\nmode = "nat"\ntun = "a b"\n' + SERVICE + BACKEND,
     "switch.tun", "whitespace"),
    ("mode", '[switch]\nmode = "dsr"\n' + SERVICE + BACKEND,
     "switch.mode", "one of 'fullnat', 'nat', got 'dsr'"),
    ("fullnat-without-snat", SERVICE + BACKEND, "switch.snat", "mode = 'fullnat', got none"),
    ("fullnat-empty-snat", "[switch]\nsnat = []\n" + SERVICE + BACKEND,
     "switch.snat", "got []"),
    ("snat-bad-ip", '[switch]\nsnat = ["203.0.113.1", "203.0.113"]\n' + SERVICE + BACKEND,
     "switch.snat[1]", "an IPv4 address"),
    ("snat-unspecified", '[switch]\nsnat = "0.0.0.0"\n' + SERVICE + BACKEND,
     "switch.snat", "unicast"),
    ("snat-int", "[switch]\nsnat = 5\n" + SERVICE + BACKEND, "switch.snat", "5 (integer)"),
    ("snat-duplicate", '[switch]\nsnat = ["203.0.113.1", "203.0.113.1"]\n' + SERVICE + BACKEND,
     "switch.snat[1]", "also switch.snat[0]"),
    ("snat-is-vip", '[switch]\nsnat = ["203.0.113.10"]\n' + SERVICE + BACKEND,
     "switch.snat[0]", "VIP of service[0]"),
    ("max-flows-zero", MINIMAL.replace("[switch]\n", "[switch]\nmax_flows = 0\n"),
     "switch.max_flows", "1..16777216, got 0"),
    ("max-flows-string", MINIMAL.replace("[switch]\n", '[switch]\nmax_flows = "big"\n'),
     "switch.max_flows", "'big' (string)"),
    ("rps-word", MINIMAL.replace("[switch]\n", '[switch]\nrps_cpus = "some"\n'),
     "switch.rps_cpus", '"all", "off" or a list of CPU numbers 0..8191, got \'some\' (string)'),
    ("rps-empty", MINIMAL.replace("[switch]\n", "[switch]\nrps_cpus = []\n"),
     "switch.rps_cpus", "got [] (array)"),
    ("rps-negative", MINIMAL.replace("[switch]\n", "[switch]\nrps_cpus = [0, -1]\n"),
     "switch.rps_cpus[1]", "an integer 0..8191, got -1"),
    ("rps-twice", MINIMAL.replace("[switch]\n", "[switch]\nrps_cpus = [1, 3, 1]\n"),
     "switch.rps_cpus[2]", "a CPU listed once, got 1 (also switch.rps_cpus[0])"),
    ("secret-short", MINIMAL.replace("[switch]\n", '[switch]\nhash_secret = "fifteen bytes.."\n'),
     "switch.hash_secret", "a string of 16..64 bytes, got 15 bytes"),
    ("secret-long", MINIMAL.replace("[switch]\n", f'[switch]\nhash_secret = "{"é" * 33}"\n'),
     "switch.hash_secret", "a string of 16..64 bytes, got 66 bytes"),
    ("secret-number", MINIMAL.replace("[switch]\n", "[switch]\nhash_secret = 1234\n"),
     "switch.hash_secret", "a string of 16..64 bytes, got integer"),
    ("route-table-main", MINIMAL.replace("[switch]\n", "[switch]\nroute_table = 254\n"),
     "switch.route_table", "254 (main)"),
    ("control-empty", MINIMAL.replace("[switch]\n", '[switch]\ncontrol = ""\n'),
     "switch.control", "non-empty"),
    ("no-services", SWITCH, "service", "at least one [[service]]"),
    ("service-is-table", SWITCH + '[service]\nname = "web"\n', "service", "array of tables"),
    ("service-no-name", SWITCH + '[[service]]\nvip = "203.0.113.10:80"\n' + BACKEND,
     "service[0].name", "required"),
    ("service-empty-name", SWITCH + service(name="") + BACKEND,
     "service[0].name", "non-empty string"),
    ("service-no-vip", SWITCH + '[[service]]\nname = "web"\n' + BACKEND,
     "service[0].vip", "required"),
    ("bad-vip", SWITCH + service(vip="203.0.113.300:80") + BACKEND,
     "service[0].vip", "IPv4 address"),
    ("vip-no-port", SWITCH + service(vip="203.0.113.10") + BACKEND,
     "service[0].vip", "'IPv4:PORT'"),
    ("vip-int", SWITCH + '[[service]]\nname = "web"\nvip = 80\n' + BACKEND,
     "service[0].vip", "80 (integer)"),
    ("vip-port-0", SWITCH + service(vip="203.0.113.10:0") + BACKEND,
     "service[0].vip", "port 1..65535, got '203.0.113.10:0'"),
    ("backend-port-70000", SWITCH + SERVICE + backend(address="192.0.2.1:70000"),
     "service[0].backend[0].address", "port 1..65535, got '192.0.2.1:70000'"),
    ("unknown-protocol", SWITCH + service(extra='protocol = "sctp"\n') + BACKEND,
     "service[0].protocol", "got 'sctp'"),
    ("udp-timeout-of-tcp", SWITCH + service(extra="udp_timeout = 30\n") + BACKEND,
     "service[0].udp_timeout", 'a key of protocol "udp" only'),
    ("one-packet-of-tcp", SWITCH + service(extra="one_packet = true\n") + BACKEND,
     "service[0].one_packet", 'a key of protocol "udp" only'),
    ("one-packet-not-bool", SWITCH + service(extra='protocol = "udp"\none_packet = 1\n') + BACKEND,
     "service[0].one_packet", "true or false, got 1"),
    ("udp-timeout-0", SWITCH + service(extra='protocol = "udp"\nudp_timeout = 0\n') + BACKEND,
     "service[0].udp_timeout", "seconds > 0"),
    ("unknown-scheduler", SWITCH + service(extra='scheduler = "fastest"\n') + BACKEND,
     "service[0].scheduler", "got 'fastest'"),
    ("option-of-another-scheduler", SWITCH + service(extra='hash_key = "ip"\n') + BACKEND,
     "service[0].hash_key", "scheduler 'rr' has no option 'hash_key'"),
    ("health-path-with-space",
     SWITCH + service(extra='[service.health]\npath = "/a b"\n') + BACKEND,
     "service[0].health.path", "without spaces, got '/a b'"),
    ("maglev-table-not-prime",
     SWITCH + service(extra='scheduler = "maglev"\ntable_size = 65536\n') + BACKEND,
     "service[0].table_size", "must be a prime number"),
    ("duplicate-service-name",
     SWITCH + SERVICE + BACKEND + service(vip="203.0.113.11:80") + backend(address="192.0.2.2:80"),
     "service[1].name", "unique among services, got 'web' (also service[0])"),
    ("duplicate-vip", SWITCH + SERVICE + BACKEND + service(name="web2") + BACKEND,
     "service[1].vip", "also service[0]"),
    ("no-backends", SWITCH + SERVICE, "service[0].backend", "at least one [[service.backend]]"),
    ("empty-backends", SWITCH + SERVICE.replace("[[service]]\n", "[[service]]\nbackend = []\n"),
     "service[0].backend", "at least one"),
    ("backend-no-name", SWITCH + SERVICE + '[[service.backend]]\naddress = "192.0.2.1:80"\n',
     "service[0].backend[0].name", "required"),
    ("backend-no-address", SWITCH + SERVICE + '[[service.backend]]\nname = "A"\n',
     "service[0].backend[0].address", "required"),
    ("duplicate-backend-name", SWITCH + SERVICE + BACKEND + backend(address="192.0.2.2:80"),
     "service[0].backend[1].name", "also service[0].backend[0]"),
    ("duplicate-backend", SWITCH + SERVICE + BACKEND + backend(name="B"),
     "service[0].backend[1].address", "unique in the service, got '192.0.2.1:80'"),
    ("backend-is-vip", SWITCH + SERVICE + backend(address="203.0.113.10:8080"),
     "service[0].backend[0].address", "VIP of service[0]"),
    ("backend-is-snat", SWITCH + SERVICE + backend(address="203.0.113.1:80"),
     "service[0].backend[0].address", "in switch.snat[0]"),
    ("weight-string", SWITCH + SERVICE + backend(extra='weight = "3"\n'),
     "service[0].backend[0].weight", "an integer 0..65535, got '3' (string)"),
    ("weight-bool", SWITCH + SERVICE + backend(extra="weight = true\n"),
     "service[0].backend[0].weight", "got True (boolean)"),
    ("weight-negative", SWITCH + SERVICE + backend(extra="weight = -1\n"),
     "service[0].backend[0].weight", "got -1"),
    ("timeout-negative", MINIMAL + "[timeouts]\nestablished = -5\n",
     "timeouts.established", "> 0 and at most 2147483, got -5"),
    ("timeout-zero", MINIMAL + "[timeouts]\nclose = 0.0\n", "timeouts.close",
     "> 0 and at most 2147483, got 0.0"),
    ("timeout-huge", MINIMAL + "[timeouts]\nestablished = " + "9" * 400 + "\n",
     "timeouts.established", "at most 2147483, got 999"),
    ("timeout-1e300", MINIMAL + "[timeouts]\nestablished = 1e300\n",
     "timeouts.established", "at most 2147483, got 1e+300"),
    ("health-interval-huge", MINIMAL + "[service.health]\ninterval = 1e9\n",
     "service[0].health.interval", "at most 2147483, got 1000000000.0"),
    ("vip-loopback", MINIMAL.replace("203.0.113.10:80", "127.0.0.5:80"),
     "service[0].vip", "not in 0/8, 127/8, 224/4 or 240/4, got '127.0.0.5:80'"),
    ("backend-this-network", MINIMAL.replace("192.0.2.1:", "0.1.2.3:"),
     "service[0].backend[0].address", "not in 0/8, 127/8, 224/4 or 240/4, got '0.1.2.3:80'"),
    ("snat-reserved", MINIMAL.replace('snat = ["203.0.113.1"]', 'snat = "240.0.0.1"'),
     "switch.snat", "not in 0/8, 127/8, 224/4 or 240/4, got '240.0.0.1'"),
    ("snat-too-many", MINIMAL.replace('snat = ["203.0.113.1"]', "snat = ["
     + ", ".join(f'"198.51.100.{i}"' for i in range(1, 18)) + "]"),
     "switch.snat", "at most 16 addresses, got 17 of them"),
    ("name-slash", MINIMAL.replace('name = "A"', 'name = "A/B"'),
     "service[0].backend[0].name", "letters, digits, '.', '_' or '-', got 'A/B'"),
    ("name-newline", MINIMAL.replace('name = "web"', 'name = "w\\neb"'),
     "service[0].name", "letters, digits, '.', '_' or '-', got 'w\\neb'"),
    ("name-too-long", MINIMAL.replace('name = "web"', 'name = "' + "w" * 65 + '"'),
     "service[0].name", "a name of 1..64"),
    ("timeout-bool", MINIMAL + "[timeouts]\nclose = true\n", "timeouts.close", "(boolean)"),
    ("timeout-string", MINIMAL + '[timeouts]\nclose = "10s"\n', "timeouts.close", "(string)"),
    ("timeout-inf", MINIMAL + "[timeouts]\nclose = inf\n", "timeouts.close", "got inf"),
    ("per-client-empty", MINIMAL + "[service.per_client]\n",
     "service[0].per_client", "max_flows or new_flows_per_second, got neither"),
    ("per-client-unknown", MINIMAL + "[service.per_client]\nmax_flow = 5\n",
     "service[0].per_client.max_flow", "one of max_flows, new_flows_per_second, burst, prefix"),
    ("per-client-flows-zero", MINIMAL + "[service.per_client]\nmax_flows = 0\n",
     "service[0].per_client.max_flows", "an integer 1..16777216, got 0"),
    ("per-client-flows-huge", MINIMAL + "[service.per_client]\nmax_flows = 16777217\n",
     "service[0].per_client.max_flows", "an integer 1..16777216, got 16777217"),
    ("per-client-flows-float", MINIMAL + "[service.per_client]\nmax_flows = 2.5\n",
     "service[0].per_client.max_flows", "an integer 1..16777216, got 2.5 (float)"),
    ("per-client-rate-zero", MINIMAL + "[service.per_client]\nnew_flows_per_second = 0\n",
     "service[0].per_client.new_flows_per_second", "a number > 0 and at most 1e+06, got 0"),
    ("per-client-rate-huge", MINIMAL + "[service.per_client]\nnew_flows_per_second = 1e7\n",
     "service[0].per_client.new_flows_per_second", "at most 1e+06, got 10000000.0"),
    ("per-client-rate-nan", MINIMAL + "[service.per_client]\nnew_flows_per_second = nan\n",
     "service[0].per_client.new_flows_per_second", "got nan"),
    ("per-client-rate-string", MINIMAL + '[service.per_client]\nnew_flows_per_second = "5/s"\n',
     "service[0].per_client.new_flows_per_second", "(string)"),
    ("per-client-burst-alone", MINIMAL + "[service.per_client]\nmax_flows = 5\nburst = 3\n",
     "service[0].per_client.burst", "new_flows_per_second beside it, got burst alone"),
    ("per-client-burst-zero",
     MINIMAL + "[service.per_client]\nnew_flows_per_second = 5\nburst = 0\n",
     "service[0].per_client.burst", "an integer 1..1000000, got 0"),
    ("per-client-prefix-zero", MINIMAL + "[service.per_client]\nmax_flows = 5\nprefix = 0\n",
     "service[0].per_client.prefix", "an integer 1..32, got 0"),
    ("per-client-prefix-33", MINIMAL + "[service.per_client]\nmax_flows = 5\nprefix = 33\n",
     "service[0].per_client.prefix", "an integer 1..32, got 33"),
    ("timeout-unknown", MINIMAL + "[timeouts]\nestablshed = 5\n",
     "timeouts.establshed", "one of none, established, syn_sent, syn_recv, fin_wait, time_wait"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "key", "fragment"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_config(text: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text, "bad.toml")
    err = info.value
    assert err.path == "bad.toml"
    assert err.key == key
    assert fragment in err.message
    line = str(err)
    assert "\n" not in line
    assert line.startswith(f"bad.toml: {key}: " if key else "bad.toml: ")
    assert line.endswith(err.message)


def test_error_message_is_one_line_naming_file_key_expected_and_found() -> None:
    text = SWITCH + SERVICE + backend(extra='weight = "3"\n')
    with pytest.raises(ConfigError) as info:
        parse(text, "/etc/pktswitch.toml")
    assert str(info.value) == (
        "/etc/pktswitch.toml: service[0].backend[0].weight: an integer 0..65535, got '3' (string)"
    )


def test_load_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(missing)
    assert info.value.path == str(missing)
    assert info.value.key == ""
    assert str(info.value).startswith(f"{missing}: ")
    assert "No such file" in str(info.value)


def test_load_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[switch]\ntun = "p\xe9"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load(path)


def test_load_real_file(tmp_path: Path) -> None:
    path = tmp_path / "pktswitch.toml"
    path.write_text(FULL)
    cfg = load(path)
    assert cfg.path == str(path)
    assert cfg == parse(FULL, str(path))
    assert load(str(path)) == cfg


def test_errors_from_a_loaded_file_name_it(tmp_path: Path) -> None:
    path = tmp_path / "pktswitch.toml"
    path.write_text(SWITCH + SERVICE)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: service[0].backend: ")
