"""Every apply recorded from real fwup, replayed with ``nhlink-fwup``.

For each record: same exit code, same stdout bytes (framing stream or text),
same target image sha256 — except FAT images, compared file by file in
test_fat_fixtures.py, and the cases EXPECT.md marks as not deterministic in
fwup itself, where the error text, image and message order are compared.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from nhlink_dbus.core.fwup_framing import OutputDecoder, Packet, PacketType
from tests.fwup.expect_records import FIXTURES, ApplyRecord, load_records, stdin_bytes

RECORDS = load_records()
FAT_FIXTURES = {"fat"}


def run_fwup(argv: tuple[str, ...], cwd: Path, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    # The records were made with stdin redirected from a file ("< file"): a file's reads come
    # in fixed 16 KiB pieces, a pipe's as its writer's timing gives them (and the progress
    # packets of unframed stdin follow the reads).
    stdin_file = cwd / ".stdin"
    stdin_file.write_bytes(stdin)
    with stdin_file.open("rb") as fh:
        return subprocess.run(
            [sys.executable, "-m", "nhlink_dbus.fwup.cli", *argv],
            cwd=cwd,
            stdin=fh,
            capture_output=True,
            timeout=60,
            check=False,
        )


def _packets(data: bytes) -> list[Packet]:
    return [p for p in OutputDecoder().feed(data) if isinstance(p, Packet)]


def _flip_active_to_c(image: Path) -> None:
    """The 'nerves_fw_active changed from a to c, CRC recomputed' setup of ab.expect.md."""
    with image.open("r+b") as fh:
        fh.seek(256 * 512)
        block = bytearray(fh.read(16 * 512))
        i = block.index(b"nerves_fw_active=a\0")
        block[i + len("nerves_fw_active=")] = ord("c")
        block[:4] = struct.pack("<I", zlib.crc32(bytes(block[4:])))
        fh.seek(256 * 512)
        fh.write(block)


class Chain:
    """Target images carried from one record to the next, per fixture file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.after_complete: dict[str, Path] = {}

    def prepare(self, rec: ApplyRecord, work: Path) -> None:
        target = work / "target.img"
        if "truncate -s 64M" in rec.setup:
            target.unlink(missing_ok=True)
            with target.open("wb") as fh:
                fh.truncate(64 << 20)
        elif "truncate -s 1M" in rec.setup:
            target.unlink(missing_ok=True)
            with target.open("wb") as fh:
                fh.truncate(1 << 20)
        elif rec.setup.startswith("copy of the image after complete"):
            shutil.copy(self.after_complete[rec.fixture], target)
            if "changed from a to c" in rec.setup:
                _flip_active_to_c(target)
        elif not rec.setup.startswith("continues from the previous step"):
            raise AssertionError(f"unknown setup {rec.setup}")


# Records of one fixture file run in order and share the target image.
_CHAINS: dict[str, Chain] = {}


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    dirs = {}
    for fixture in sorted({r.fixture for r in RECORDS}):
        work = tmp_path_factory.mktemp(fixture)
        for f in FIXTURES.iterdir():
            if f.is_file():
                (work / f.name).symlink_to(f)
        dirs[fixture] = work
    return dirs


def test_records_found() -> None:
    # The fixtures hold 60-odd apply records; a parsing slip must not hide them.
    assert len(RECORDS) >= 55
    assert {r.fixture for r in RECORDS} == {
        "ab",
        "bad-signature",
        "corrupt-resource",
        "fat",
        "simple",
        "unsigned",
    }


@pytest.mark.parametrize("rec", RECORDS, ids=lambda r: r.id)
def test_apply_record(rec: ApplyRecord, workdirs: dict[str, Path]) -> None:
    work = workdirs[rec.fixture]
    chain = _CHAINS.setdefault(rec.fixture, Chain(work))
    chain.prepare(rec, work)
    result = run_fwup(rec.argv, work, stdin_bytes(rec.stdin_name))
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    assert result.returncode == rec.exit_code, result.stdout
    target = work / "target.img"
    if (
        rec.exit_code == 0
        and "-t complete" in " ".join(rec.argv)
        and target.stat().st_size == 64 << 20
    ):
        saved = work / "after-complete.img"
        shutil.copy(target, saved)
        chain.after_complete[rec.fixture] = saved
    if rec.stdout_text is not None:
        assert result.stdout.decode() == rec.stdout_text
    if rec.stdout_file is not None:
        expected = (FIXTURES / rec.stdout_file).read_bytes()
        if rec.deterministic:
            assert result.stdout == expected
        else:
            ours, theirs = _packets(result.stdout), _packets(expected)
            assert [p for p in ours if p.type is not PacketType.PR][:-1] == [
                p for p in theirs if p.type is not PacketType.PR
            ][:-1]
            assert ours[-1].type is theirs[-1].type
            progress = [p.code for p in ours if p.type is PacketType.PR]
            assert progress == sorted(set(progress)) and progress[0] == 0
    if rec.sha256 is not None and rec.fixture not in FAT_FIXTURES:
        assert hashlib.sha256(target.read_bytes()).hexdigest() == rec.sha256
