"""nhlink-fwup starts lean, and reads its command line as fwup does.

Applying an archive loads none of the standard library's modules that cost start-up
time and that an apply does not need (typing, re, enum, argparse, datetime, base64,
contextlib, ...): together about 15 ms of every start, where fwup applies a small
archive in 4 ms. The command line follows getopt_long's rules, as fwup's does."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nhlink_dbus.core.fwup_meta import utc_text
from nhlink_dbus.fwup import cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "fwup"
KEY = FIXTURES / "fwup-key.pub"

# Not needed to apply a raw-write archive, and each a millisecond or more to import.
COSTLY = (
    "argparse", "asyncio", "base64", "contextlib", "cryptography", "dataclasses",
    "datetime", "enum", "gettext", "hashlib", "inspect", "locale", "logging", "pathlib",
    "re", "shutil", "subprocess", "tempfile", "typing", "warnings",
)  # fmt: skip

PROBE = """
import json, sys
before = set(sys.modules)
from nhlink_dbus.fwup import cli
status = cli.main(sys.argv[1:])
print(json.dumps([status, sorted(set(sys.modules) - before)]))
"""


def test_an_apply_loads_no_costly_module(tmp_path: Path) -> None:
    image = tmp_path / "image.img"
    image.write_bytes(b"")
    argv = ["-a", "-q", "-d", str(image), "-t", "upgrade"]
    argv += ["-i", str(FIXTURES / "simple.fw"), "-p", str(KEY)]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    status, loaded = json.loads(done.stdout.splitlines()[-1])
    assert status == 0
    assert image.stat().st_size == 262144  # the apply happened
    assert "nhlink_dbus.fwup.session" in loaded
    tops = {name.split(".")[0] for name in loaded}
    assert sorted(tops.intersection(COSTLY)) == []


def test_options_follow_getopt_long() -> None:
    args = cli.parse_args(
        ["-aq", "-dIMG", "--ta", "up", "--public-key=AAA", "-p", "k", "-i", "-", "--max=0x10"]
    )
    assert (args.command, args.quiet, args.device, args.task) == ("apply", True, "IMG", "up")
    assert args.keys == [("text", "AAA"), ("file", "k")]  # one list, in order
    assert (args.input, args.max_size, args.rest, args.easy) == ("-", 16, [], False)
    # Arguments anywhere; "--" ends the options; a value may start with "-".
    args = cli.parse_args(["a.fw", "-t", "-x", "--", "-b.fw"])
    assert (args.task, args.rest, args.easy) == ("-x", ["a.fw", "-b.fw"], True)
    assert cli.parse_args(["--metadata"]).command == "metadata"  # exact beats prefix
    assert cli.parse_args(["--no-verify-w"]).verify_writes is False
    assert cli.parse_args(["--progress-low", "010"]).progress_low == 8  # strtol base 0
    # -h and --version are answered as they come, as fwup's getopt loop does.
    assert cli.parse_args(["--version", "--bogus"]).version
    assert cli.parse_args(["-hx"]).help


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unrecognized option '--bogus'"),
        (["--meta"], "option '--meta' is ambiguous; possibilities: '--metadata' '--metadata-key'"),
        (["-x"], "invalid option -- 'x'"),
        (["-d"], "option requires an argument -- 'd'"),
        (["--task"], "option '--task' requires an argument"),
        (["--quiet=1"], "option '--quiet' doesn't allow an argument"),
    ],
)
def test_a_bad_command_line_is_refused_with_getopts_words(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err == f"nhlink-fwup: {message}\nTry 'nhlink-fwup --help'.\n"


def test_help_names_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: nhlink-fwup")
    for option in cli.OPTIONS:
        for name in option.names():
            assert name in out


@pytest.mark.parametrize("seconds", [0, 59, 86399, 951782400, 951868800, 1700000000, 2**32 - 1])
def test_dates_are_printed_as_datetime_prints_them(seconds: int) -> None:
    expected = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert utc_text(seconds) == expected
