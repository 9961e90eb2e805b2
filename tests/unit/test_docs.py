"""The documentation against the code: what the docs show from the code's own tables must be
what the code holds, so a change to one that forgets the other fails here.

- docs/operations.md's config reference is the output of pktswitch.control.config_doc
  (regenerate with `python -m pktswitch.control.config_doc --write`);
- docs/architecture.md shows the TCP state table the code runs on;
- docs/operations.md names every counter `pktswitch stats` shows and every drop and slow reason;
- examples/pktswitch.toml parses, to exactly what its comments say;
- every `pktswitch COMMAND` the docs mention exists, and every relative link leads to a file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pktswitch.cli import main
from pktswitch.control import config_doc
from pktswitch.control.config import (
    Backend,
    Config,
    Service,
    SwitchConfig,
    load,
)
from pktswitch.core import packet
from pktswitch.core.acl import Acl
from pktswitch.core.switch import Switch
from pktswitch.core.tcpstate import DEFAULT_TIMEOUTS, State, render
from pktswitch.sched.health_policy import HealthPolicy

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_config_reference_is_generated_from_the_key_tables() -> None:
    text = OPERATIONS.read_text()
    assert config_doc.section(text) == config_doc.reference(), (
        "docs/operations.md is stale: python -m pktswitch.control.config_doc --write"
    )
    assert config_doc.main(["--check"]) == 0


def test_the_generator_rewrites_only_its_section(tmp_path: Path) -> None:
    doc = tmp_path / "ops.md"
    stale = f"# head\n\n{config_doc.BEGIN}\nold table\n{config_doc.END}\n\ntail\n"
    doc.write_text(stale)
    assert config_doc.main(["--check", "--doc", str(doc)]) == 1
    assert config_doc.main(["--write", "--doc", str(doc)]) == 0
    new = doc.read_text()
    assert new.startswith("# head\n\n") and new.endswith("\n\ntail\n")
    assert config_doc.section(new) == config_doc.reference()
    assert config_doc.main(["--check", "--doc", str(doc)]) == 0
    doc.write_text("# no markers\n")
    with pytest.raises(ValueError, match="markers"):
        config_doc.main(["--write", "--doc", str(doc)])


def test_the_reference_lists_every_key_with_its_reload_rule() -> None:
    ref = config_doc.reference()
    assert "| `max_half_open` | integer 1..max_flows | max_flows / 4 | yes |" in ref
    assert '| `tun` | interface name, 1..15 bytes | `"pks0"` | no: restart |' in ref
    assert "| `vip` | 'IPv4:PORT' | required | no: a service keeps its VIP" in ref
    est = "| `established` | seconds > 0, at most 2147483 | `900` | yes, from each flow's next"
    assert est + " state change" in ref
    assert '| `protocol` | "tcp" or "udp" | `"tcp"` | no: a service keeps its VIP and' in ref


def test_architecture_shows_the_state_table_the_code_runs_on() -> None:
    assert render() in (ROOT / "docs" / "architecture.md").read_text()


def test_operations_names_every_counter_and_reason() -> None:
    text = OPERATIONS.read_text()
    stats = Switch([], snat=["203.0.113.1"]).stats(0.0)
    daemon_only = ("device_qdisc", "rps_cpus", "write_errors", "internal_errors")
    daemon_only += ("largest_read_bytes", "probes", "health_checks", "reloads")
    names = [*stats, *daemon_only, *packet.PARSE_ERRORS[1:], *packet.SLOW_REASONS]
    names += ["icmp_checksum", "icmp_other", "icmp_malformed", "icmp_no_flow", "internal_error"]
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"docs/operations.md does not name {missing}"


def test_the_example_config_holds_what_its_comments_say() -> None:
    cfg = load(ROOT / "examples" / "pktswitch.toml")
    timeouts = dict(DEFAULT_TIMEOUTS)
    timeouts[State.ESTABLISHED] = 900
    timeouts[State.TIME_WAIT] = 120
    health = HealthPolicy(check="http", path="/health", slow_start=10.0)
    assert cfg == Config(
        path=str(ROOT / "examples" / "pktswitch.toml"),
        switch=SwitchConfig(
            tun="pks0",
            mode="fullnat",
            snat=("203.0.113.1", "203.0.113.2"),
            max_flows=262144,
            max_half_open=65536,
            offload=True,
            rps_cpus="off",
        ),
        timeouts=timeouts,
        services=(
            Service(
                name="web",
                vip="203.0.113.10",
                port=80,
                protocol="tcp",
                scheduler="wrr",
                backends=(
                    Backend("A", "192.0.2.1", 80, 2),
                    Backend("B", "192.0.2.2", 80, 3),
                    Backend("C", "192.0.2.3", 80, 5),
                ),
                health=health,
                acl=Acl(allow=("198.51.100.0/24",), deny=("198.51.100.7/32",)),
            ),
            Service(
                name="bulk",
                vip="203.0.113.10",
                port=5201,
                protocol="tcp",
                scheduler="maglev",
                backends=(Backend("A", "192.0.2.1", 5201, 1), Backend("B", "192.0.2.2", 5201, 1)),
                options=(("hash_key", "ip"), ("table_size", 65537)),
            ),
        ),
    )


_COMMAND = re.compile(r"(?:`|\$ )pktswitch ([a-z][a-z-]*)")  # in prose: `pktswitch run`
_BLOCK = re.compile(r"^```[a-z]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_BLOCK_COMMAND = re.compile(r"^pktswitch ([a-z][a-z-]*)", re.MULTILINE)  # a command line
_LINK = re.compile(r"\]\(([^)#:]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_name_only_commands_that_exist(doc: Path) -> None:
    text = doc.read_text()
    said = set(_COMMAND.findall(text))
    for block in _BLOCK.findall(text):
        said |= set(_BLOCK_COMMAND.findall(block))
    assert said - set(main.commands) == set()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_link_only_to_files_that_exist(doc: Path) -> None:
    broken = [t for t in _LINK.findall(doc.read_text()) if not (doc.parent / t).exists()]
    assert broken == []
