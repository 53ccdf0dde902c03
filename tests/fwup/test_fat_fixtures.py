"""fat.fw applied end to end with ``nhlink-fwup``: FAT results equal real fwup's
file by file (the recorded mtools listings, label, serial, contents), the file
system passes ``fsck.vfat -n``, and everything outside the FAT partition is
what fwup wrote there."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fwup.expect_records import FIXTURES, frame

FAT_START = 2048 * 512
FAT_END = FAT_START + 16384 * 512
TOOLS_ENV = {"MTOOLSRC": "/dev/null", "MTOOLS_SKIP_CHECK": "1", "PATH": os.defpath, "LC_ALL": "C"}
KEY = str(FIXTURES / "fwup-key.pub")
ROOTFS = FIXTURES / "conf"  # rootfs-fat.img is regenerated below


def _expected_listings() -> list[str]:
    text = (FIXTURES / "fat.expect.md").read_text()
    return re.findall(r"mtools listing;[^\n]*\n\n```\n(.*?)```", text, flags=re.S)


def _listing(image: Path) -> str:
    target = f"{image}@@{FAT_START}"
    out = ""
    for cmd in (["mlabel", "-s", "-i", target, "::"], ["mdir", "-/", "-i", target, "::"]):
        r = subprocess.run(cmd, env=TOOLS_ENV, capture_output=True, text=True, check=True)
        out += r.stdout
    return out.rstrip("\n") + "\n"


def _apply(
    image: Path, task: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    args = [sys.executable, "-m", "nhlink_dbus.fwup.cli", "-a", "--framing", "-d", str(image)]
    args += ["-t", task, "-p", KEY, "-i", "-" if stdin is not None else str(FIXTURES / "fat.fw")]
    return subprocess.run(args, input=stdin or b"", capture_output=True, timeout=60, check=False)


def _fsck(image: Path, tmp: Path) -> None:
    part = tmp / "part.img"
    with image.open("rb") as src:
        src.seek(FAT_START)
        part.write_bytes(src.read(FAT_END - FAT_START))
    r = subprocess.run(["fsck.vfat", "-n", str(part)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def _rootfs() -> bytes:
    import random  # noqa: PLC0415

    return random.Random(4).randbytes(65536)  # EXPECT.md: rootfs-fat.img = seed 4


def _outside_fat(image: Path) -> str:
    data = bytearray(image.read_bytes())
    data[FAT_START:FAT_END] = bytes(FAT_END - FAT_START)
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    img = tmp_path / "target.img"
    with img.open("wb") as fh:
        fh.truncate(64 << 20)
    return img


def test_rootfs_seed_matches_fixture() -> None:
    assert hashlib.sha256(_rootfs()).hexdigest() == (
        "ca088c6b63aba9755aef94a9de833e9631808735d59d67e72f3ac7e0d46a8de6"
    )


def test_fat_chain_equals_fwup_file_by_file(image: Path, tmp_path: Path) -> None:
    expected = _expected_listings()
    assert len(expected) == 3
    steps = [("complete", 18432), ("upgrade", 38912), ("upgrade", 18432)]
    for (task, rootfs_block), listing, frames in zip(
        steps,
        expected,
        ["fat.complete", "fat.upgrade.after-complete", "fat.upgrade.after-upgrade-b"],
        strict=True,
    ):
        result = _apply(image, task)
        assert result.returncode == 0, result.stdout
        assert result.stdout == (FIXTURES / "framing" / f"{frames}.framing.bin").read_bytes()
        assert _listing(image) == listing
        _fsck(image, tmp_path)
        with image.open("rb") as fh:
            fh.seek(rootfs_block * 512)
            assert fh.read(65536) == _rootfs()
            fh.seek(0)
            sector0 = fh.read(512)
        assert sector0[510:] == b"\x55\xaa" and sector0[446] == 0x80  # partition 0 bootable
    grubenv = subprocess.run(
        ["mtype", "-i", f"{image}@@{FAT_START}", "::EFI/BOOT/grubenv"],
        env=TOOLS_ENV,
        capture_output=True,
        check=True,
    ).stdout
    assert grubenv == (FIXTURES / "conf" / "grubenv_a").read_bytes()


def test_fat_complete_from_framed_stdin_same_as_file(image: Path, tmp_path: Path) -> None:
    result = _apply(image, "complete", stdin=frame((FIXTURES / "fat.fw").read_bytes(), 4096, True))
    assert result.returncode == 0
    assert result.stdout == (FIXTURES / "framing" / "fat.complete.stdin.framing.bin").read_bytes()
    assert _listing(image) == _expected_listings()[0]
    other = tmp_path / "file.img"
    with other.open("wb") as fh:
        fh.truncate(64 << 20)
    assert _apply(other, "complete").returncode == 0
    assert _outside_fat(image) == _outside_fat(other)
    assert _listing(other) == _listing(image)


def test_upgrade_on_blank_image_finds_no_task(image: Path) -> None:
    result = _apply(image, "upgrade")
    assert result.returncode == 1
    assert result.stdout == (FIXTURES / "framing" / "fat.upgrade.blank.framing.bin").read_bytes()
    assert hashlib.sha256(image.read_bytes()).hexdigest() == (
        "3b6a07d0d404fab4e23b6d34bc6696a6a312dd92821332385e5af7c01c421351"
    )
