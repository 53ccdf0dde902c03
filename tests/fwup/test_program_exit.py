"""nhlink-fwup as a program ends its process at once after a success (``cli._leave``):
what it wrote is all there (stdout flushed, the image complete), nothing is left behind
in the temporary folder, and a failure goes the normal way out."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

from nhlink_dbus.fwup import cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "fwup"
KEY = FIXTURES / "fwup-key.pub"
WRONG_KEY = FIXTURES / "wrong-key.pub"
FAT = FIXTURES / "fat.fw"
IMAGE_BYTES = 20 << 20


def program(tmp: Path, *argv: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, TMPDIR=str(tmp))
    env.pop("PYTHONUNBUFFERED", None)  # stdout buffered, as it is for a user
    return subprocess.run(
        [sys.executable, "-m", "nhlink_dbus.fwup.cli", *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        check=False,
    )


def blank(path: Path) -> Path:
    with path.open("wb") as fh:
        fh.truncate(IMAGE_BYTES)
    return path


def packets(stdout: bytes) -> list[bytes]:
    """The framed packets' types, then the handshake trailer's bytes."""
    kinds, at = [], 0
    while at < len(stdout) and stdout[at] != 0x1A:
        (length,) = struct.unpack_from(">I", stdout, at)
        kinds.append(stdout[at + 4 : at + 6])
        at += 4 + length
    return [*kinds, stdout[at:]]


def test_a_success_leaves_everything_done(tmp_path: Path) -> None:
    spool = tmp_path / "tmp"
    spool.mkdir()
    image = blank(tmp_path / "program.img")
    done = program(
        spool, "--framing", "--exit-handshake", "-a", "-d", str(image),
        "-t", "complete", "-i", str(FAT), "-p", str(KEY),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = packets(done.stdout)
    assert got[-2:] == [b"OK", b"\x1a\x00"], got  # all of stdout, to the handshake
    assert list(spool.iterdir()) == []  # the FAT work's temporary files are gone
    reference = blank(tmp_path / "in-process.img")
    assert cli.main(["-a", "-q", "-d", str(reference), "-t", "complete", "-i", str(FAT)]) == 0
    assert image.read_bytes() == reference.read_bytes()


def test_metadata_output_is_whole(tmp_path: Path) -> None:
    done = program(tmp_path, "-m", "-i", str(FAT))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert 'meta-product="nhlink-test"' in lines
    assert done.stdout.endswith(b"\n")


def test_a_failure_goes_the_normal_way_out(tmp_path: Path) -> None:
    image = blank(tmp_path / "t.img")
    done = program(
        tmp_path, "-a", "-q", "-d", str(image), "-t", "complete", "-i", str(FAT),
        "-p", str(WRONG_KEY),
    )  # fmt: skip
    assert done.returncode == 1
    assert b"signature" in done.stdout + done.stderr


def test_text_still_buffered_at_the_end_is_written(tmp_path: Path) -> None:
    """``--version`` writes through sys.stdout without a flush of its own."""
    done = program(tmp_path, "--version")
    assert (done.returncode, done.stdout) == (0, b"1.16.0\n")
