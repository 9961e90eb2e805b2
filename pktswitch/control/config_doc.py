"""The config reference of docs/operations.md, written from the code's own key tables.

Every key of every table (config_schema.TABLES) with its type, its default and what it sets,
and whether `pktswitch reload` applies it (config_reload's rules), so the reference cannot
drift from the parser: tests/unit/test_docs.py fails when the file and the code disagree.

    python -m pktswitch.control.config_doc            print the reference (markdown)
    python -m pktswitch.control.config_doc --check    exit 1 if docs/operations.md is stale
    python -m pktswitch.control.config_doc --write    rewrite its section in docs/operations.md

The section sits between BEGIN and END below; what is around it is written by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pktswitch.control.config_reload import (
    MATCHED_BY,
    RELOADABLE_SWITCH_KEYS,
    SERVICE_RESTART_KEYS,
)
from pktswitch.control.config_schema import NO_DEFAULT, TABLES, Key

BEGIN = "<!-- BEGIN config reference: python -m pktswitch.control.config_doc --write -->"
END = "<!-- END config reference -->"
DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"

APPLIES = "yes"
RESTART = "no: restart"
# what a reload does with each table's keys, beyond the key lists of config_reload
_TABLE_RULES = {
    "(top level)": "its keys' rules",
    "[timeouts]": "yes, from each flow's next state change",
}


def toml(value: Any) -> str:
    """A default as it would be written in the file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return str(value)


def default_text(key: Key) -> str:
    if key.default_text:
        return key.default_text
    if key.default is NO_DEFAULT:
        return "required"
    return f"`{toml(key.default)}`"


def reload_text(table: str, key: Key) -> str:
    """Whether `pktswitch reload` applies a changed value of `key` in `table`."""
    if table in _TABLE_RULES:
        return _TABLE_RULES[table]
    if table == "[switch]":
        return APPLIES if key.name in RELOADABLE_SWITCH_KEYS else RESTART
    if table == "[[service]]" and key.name in SERVICE_RESTART_KEYS:
        return "no: a service keeps its VIP and protocol (add one under another name)"
    if key.name in MATCHED_BY.get(table, ()):
        kind = table.strip("[]").split(".")[-1]
        return (
            f"matches the {kind}: a new value is a new {kind}; the old one takes no new"
            " flows and goes with its last flow"
        )
    return APPLIES


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference() -> str:
    """The markdown reference: one table per config table, in the parser's order."""
    out = [
        "Generated from `pktswitch/control/config_schema.py` (keys, types, defaults) and",
        "`pktswitch/control/config_reload.py` (reload). A key the tables do not list is refused.",
    ]
    for table, keys in TABLES:
        out += ["", f"### `{table}`", ""]
        out.append("| key | type | default | reload applies | sets |")
        out.append("|---|---|---|---|---|")
        for k in keys:
            cells = (f"`{k.name}`", k.type, default_text(k), reload_text(table, k), k.what)
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(out) + "\n"


def section(text: str) -> str:
    """The generated section of a document's text (between the markers), or ValueError."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {BEGIN!r} and {END!r} are missing or out of order")
    return text[start + len(BEGIN) : end].strip("\n") + "\n"


def rewritten(text: str) -> str:
    """`text` with its generated section replaced by the current reference."""
    section(text)  # the markers must be there
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{reference()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pktswitch.control.config_doc")
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--check", action="store_true", help="exit 1 if the document is stale")
    what.add_argument("--write", action="store_true", help="rewrite the document's section")
    ap.add_argument("--doc", type=Path, default=DOC, help=f"the document [default: {DOC}]")
    args = ap.parse_args(argv)
    if not (args.check or args.write):
        sys.stdout.write(reference())
        return 0
    text = args.doc.read_text()
    new = rewritten(text)
    if args.check:
        if new != text:
            print(f"{args.doc}: the config reference is stale; run with --write", file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.doc.write_text(new)
        print(f"{args.doc}: config reference rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
