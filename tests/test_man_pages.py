"""The man pages (docs/*.md, turned into roff by go-md2man when the .deb is built)
name every option and command each program's parser accepts."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from nhlink_dbus import ctl, daemon
from nhlink_dbus.fwup import cli as fwup_cli
from nhlink_devtools.hubsim import cli as sim_cli
from nhlink_kiosk import cli as kiosk_cli

DOCS = Path(__file__).resolve().parents[1] / "docs"
# Each page's program: every option string and sub-command name it accepts.
PAGES: dict[str, Callable[[], Iterable[str]]] = {
    "nhlink-dbus.8.md": lambda: accepted(daemon._parser()),
    "nhlinkctl.1.md": lambda: accepted(ctl._parser()),
    # nhlink-fwup parses its options without argparse, from one table.
    "nhlink-fwup.1.md": lambda: [name for o in fwup_cli.OPTIONS for name in o.names()],
    "nhlink-hub-sim.1.md": lambda: accepted(sim_cli._parser()),
    "nhlink-kiosk.1.md": lambda: accepted(
        kiosk_cli.parser("nhlink-kiosk-gtk", "the options both share")
    ),
}


def accepted(parser: argparse.ArgumentParser) -> Iterator[str]:
    """Every option string and sub-command name of ``parser``, recursively."""
    for action in parser._actions:
        yield from action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name
                yield from accepted(sub)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_man_page_names_every_option_and_command(page: str) -> None:
    text = (DOCS / page).read_text()
    bold = set(re.findall(r"\*\*([^*\s]+)\*\*", text))
    missing = sorted(set(PAGES[page]()) - bold)
    assert missing == [], f"{page} does not name {missing}"


@pytest.mark.parametrize("page", [*sorted(PAGES), "nhlink.toml.5.md"])
def test_man_page_title_block_is_go_md2man_s(page: str) -> None:
    # go-md2man turns "% NAME SECTION DATE SOURCE MANUAL" into .TH; the page's name
    # and section are its file name's.
    name, section = page.removesuffix(".md").rsplit(".", 1)
    first = (DOCS / page).read_text().splitlines()[0]
    assert first.startswith(f"% {name.upper()} {section} ")
