"""The command line both prompts take, and their stderr."""

from __future__ import annotations

import argparse
import logging
import os
import pwd

from nhlink_kiosk import __version__
from nhlink_kiosk.prompt import DEFAULT_LATER_DELAY_S, Report

logger = logging.getLogger("nhlink_kiosk")

MAX_LATER_DELAY_S = 7 * 24 * 3600


def _later_delay(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if not 1 <= value <= MAX_LATER_DELAY_S:
        raise argparse.ArgumentTypeError(f"must be 1..{MAX_LATER_DELAY_S} seconds, not {value}")
    return value


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options both prompts share; a prompt may add its own."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument(
        "--later-delay",
        type=_later_delay,
        default=DEFAULT_LATER_DELAY_S,
        metavar="SECONDS",
        help=f"how long 'Later' (Escape) puts an offer off (default {DEFAULT_LATER_DELAY_S})",
    )
    p.add_argument(
        "--verbose", action="store_true", help="also log every change of the window to stderr"
    )
    p.add_argument("--version", action="version", version=f"{prog} {__version__}")
    return p


def setup_logging(prog: str, verbose: bool) -> None:
    """One line per message on stderr, named by the program."""
    logging.basicConfig(level=logging.INFO, format=f"{prog}: %(message)s")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def report(effect: Report) -> None:
    level = {"error": logging.ERROR, "warning": logging.WARNING}.get(effect.level, logging.INFO)
    logger.log(level, "%s", effect.text)


def who_am_i() -> str:
    """``user NAME (uid N)`` for the "not allowed" line."""
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
    return f"user {name} (uid {uid})"
