"""fat_mkfs byte for byte as fwup 1.16.0, and FAT work through the block cache.

The digests were taken from images made by the real fwup 1.16.0 (``fat_mkfs(63, N)``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nhlink_dbus.core.block_cache import SEGMENT, BlockCache
from nhlink_dbus.errors import FirmwareError
from nhlink_dbus.fwup.fat import FatFilesystem
from nhlink_dbus.fwup.fat_adapter import MtoolsFat

pytestmark = pytest.mark.skipif(shutil.which("mdir") is None, reason="needs mtools")

OFFSET = 63
TOOLS_ENV = {"MTOOLSRC": "/dev/null", "MTOOLS_SKIP_CHECK": "1", "PATH": os.defpath, "LC_ALL": "C"}

# fat_mkfs(63, count) by real fwup into an empty file: sha256 of the volume's sectors.
REAL_VOLUME_SHA256 = {
    2000: "268136d1b5d5287d3f977f452631e8d77fc99262e44a9f2ca1877197363911cb",  # FAT12
    5000: "f7e932b16c6a80ca16328d1a8a72e634962a1627fc7f2a6014b07dfe44bebdb6",  # FAT16
    77238: "015495b6dbf8909c5597662661938c78be71bd51e54100317089a4287d34a214",  # FAT32
}
# The same into a 3 MiB file of 0x5a bytes: sha256 of the whole image (fwup trims whole
# 128 KiB segments of the volume, so the ones it writes into read back zero-filled).
REAL_PREFILLED_SHA256 = {
    5000: "3f95ff61b60c4420d5c69d502b4dcd03ce1d8470a2c9f85b256c7888c75f412f",
    77238: "08581ecf0de0eef441d2ac60afd05bf21bab7c952d2554958018ff681a268efc",
}


class FileDevice:
    """A BlockDevice over a regular file (what FileTarget does, minus the checks)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def pread(self, size: int, offset: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        os.pwrite(self.fd, data, offset)

    def close(self) -> None:
        os.close(self.fd)


def _volume_sha(image: Path, count: int) -> str:
    data = image.read_bytes()[OFFSET * 512 : (OFFSET + count) * 512]
    assert len(data) == count * 512
    return hashlib.sha256(data).hexdigest()


def _mdir(image: Path, offset: int = OFFSET) -> str:
    result = subprocess.run(
        ["mdir", "-b", "-i", f"{image}@@{offset * 512}", "::"],
        env=TOOLS_ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout if result.returncode == 0 else f"error: {result.stderr}"


@pytest.mark.parametrize("count", sorted(REAL_VOLUME_SHA256))
def test_mkfs_grows_a_short_file_with_fwups_bytes(tmp_path: Path, count: int) -> None:
    image = tmp_path / "img"
    image.write_bytes(bytes(131072))  # shorter than the file system
    FatFilesystem(str(image), OFFSET).mkfs(count)
    assert image.stat().st_size == (OFFSET + count) * 512
    assert _volume_sha(image, count) == REAL_VOLUME_SHA256[count]


@pytest.mark.parametrize("count", sorted(REAL_PREFILLED_SHA256))
def test_mkfs_zero_fills_the_segments_it_writes(tmp_path: Path, count: int) -> None:
    image = tmp_path / "img"
    image.write_bytes(b"\x5a" * (3 * 1024 * 1024))
    FatFilesystem(str(image), OFFSET).mkfs(count)
    data = image.read_bytes()
    if len(data) % SEGMENT:  # the engine's cache grows the file to the segment's end
        data += bytes(SEGMENT - len(data) % SEGMENT)
    assert hashlib.sha256(data).hexdigest() == REAL_PREFILLED_SHA256[count]


@pytest.mark.parametrize("count", sorted(REAL_PREFILLED_SHA256))
def test_mkfs_through_the_cache_matches_fwup(tmp_path: Path, count: int) -> None:
    image = tmp_path / "img"
    image.write_bytes(b"\x5a" * (3 * 1024 * 1024))
    dev = FileDevice(image)
    cache = BlockCache(dev)
    MtoolsFat(str(image), cache).mkfs(OFFSET, count)
    cache.flush()
    dev.close()
    assert hashlib.sha256(image.read_bytes()).hexdigest() == REAL_PREFILLED_SHA256[count]


def test_mkfs_abort_writes_nothing(tmp_path: Path) -> None:
    image = tmp_path / "img"
    image.write_bytes(bytes(4096))
    with pytest.raises(FirmwareError, match=r"^fat_mkfs\(\): FATFS: f_mkfs\(\) aborted"):
        FatFilesystem(str(image), OFFSET).mkfs(100)
    assert image.read_bytes() == bytes(4096)


def test_fat_work_stays_in_the_cache_until_flushed(tmp_path: Path) -> None:
    image = tmp_path / "img"
    dev = FileDevice(image)
    cache = BlockCache(dev)
    fat = MtoolsFat(str(image), cache)
    assert fat.through_cache
    fat.mkfs(OFFSET, 77238)
    fat.touch(OFFSET, "first")
    writer = fat.open_write(OFFSET, "dir-less.txt")
    writer.write(b"hello FAT\n" * 1000)
    writer.commit()
    fat.mkdir(OFFSET, "EFI")
    fat.cp(OFFSET, "dir-less.txt", "EFI/copy.txt")
    # Nothing on the target yet: everything is in the cache, and reads see it.
    assert image.stat().st_size == 0
    assert fat.exists(OFFSET, "EFI/copy.txt")
    assert fat.read(OFFSET, "EFI/COPY.TXT") == b"hello FAT\n" * 1000
    cache.discard()  # what a failed apply does: the FAT work never reaches the target
    assert image.stat().st_size == 0
    fat.mkfs(OFFSET, 77238)
    fat.touch(OFFSET, "kept")
    cache.flush()
    dev.close()
    assert "kept" in _mdir(image)
    assert "first" not in _mdir(image)


def test_cp_between_volumes(tmp_path: Path) -> None:
    image = tmp_path / "img"
    dev = FileDevice(image)
    cache = BlockCache(dev)
    fat = MtoolsFat(str(image), cache)
    fat.mkfs(2048, 2016)
    fat.mkfs(4096, 2016)
    writer = fat.open_write(2048, "1.bin")
    writer.write(bytes(range(256)) * 4)
    writer.commit()
    fat.cp(2048, "1.bin", "2.bin", 4096)
    fat.cp(4096, "2.bin", "3.bin", 2048)
    with pytest.raises(FirmwareError, match=r"^fatfs_cp can't open file\(nope\): FATFS: Could"):
        fat.cp(2048, "nope", "x", 4096)
    cache.flush()
    dev.close()
    assert fat.read(4096, "2.bin") == bytes(range(256)) * 4
    assert fat.read(2048, "3.bin") == bytes(range(256)) * 4
    direct = MtoolsFat(str(image))
    assert not direct.through_cache
    assert direct.read(4096, "2.bin") == bytes(range(256)) * 4
    assert "2.bin" in _mdir(image, 4096)
    assert "3.bin" not in _mdir(image, 4096)


def test_not_a_fat_volume_through_the_cache(tmp_path: Path) -> None:
    image = tmp_path / "img"
    image.write_bytes(bytes(1024 * 1024))
    dev = FileDevice(image)
    fat = MtoolsFat(str(image), BlockCache(dev))
    with pytest.raises(FirmwareError, match=r"^fat_mkdir\(EFI\): FATFS: There is no valid FAT"):
        fat.mkdir(OFFSET, "EFI")
    assert not fat.exists(OFFSET, "x")
    dev.close()
    assert image.read_bytes() == bytes(1024 * 1024)


# fat_mkfs(63, 128): FAT12, 1 sector per cluster; 128 - 1 boot - 2 FATs - 32 root = 93 data
# clusters (47616 bytes).
SMALL = 128
SMALL_ROOM = 93 * 512


@pytest.mark.parametrize("cached", [False, True], ids=["direct", "cache"])
def test_fat_write_fails_at_the_write_that_does_not_fit(tmp_path: Path, cached: bool) -> None:
    image = tmp_path / "image.img"
    image.write_bytes(bytes((OFFSET + SMALL) * 512))
    FatFilesystem(str(image), OFFSET).mkfs(SMALL)
    device = FileDevice(image)
    cache = BlockCache(device) if cached else None
    fat = MtoolsFat(str(image), cache)
    try:
        first = fat.open_write(OFFSET, "a.bin")
        first.write(b"a" * 30000)
        first.commit()
        if cache is not None:
            cache.flush()
        # Rewritten in place, a.bin may take its own 59 clusters back: the room is the volume.
        again = fat.open_write(OFFSET, "A.BIN")
        again.write(b"b" * (SMALL_ROOM - 100))
        with pytest.raises(FirmwareError) as excinfo:
            again.write(b"c" * 300)
        assert str(excinfo.value) == (
            "Error writing file to FAT: A.BIN, expected 300 bytes written, got 100 "
            "(maybe the disk is full?)"
        )
        again.abort()
        # A gap is zeros written 512 at a time from where the file ends; the piece that does
        # not fit is reported with the size of the write that was to follow it. a.bin holds
        # 59 clusters, so new.bin has 17408 bytes: the piece at 1000 + 32 * 512 = 17384 fits
        # 24 of its bytes.
        other = fat.open_write(OFFSET, "new.bin")
        other.write(b"x" * 1000)
        with pytest.raises(FirmwareError) as excinfo:
            other.fill(17000, 4096)
        assert "new.bin, expected 4096 bytes written, got 24 " in str(excinfo.value)
        other.abort()
        # Gaps that fit are zeros in the file, a final one included (a file ending in a hole).
        gaps = fat.open_write(OFFSET, "gaps.bin")
        gaps.write(b"x" * 10)
        gaps.fill(1000, 5)
        gaps.write(b"y" * 5)
        gaps.fill(700, 0)
        gaps.commit()
        assert fat.read(OFFSET, "gaps.bin") == b"x" * 10 + bytes(1000) + b"y" * 5 + bytes(700)
        if cache is not None:
            cache.flush()
        # Nothing of the failed writes reached the volume.
        assert fat.read(OFFSET, "a.bin") == b"a" * 30000
        assert fat.read(OFFSET, "new.bin") is None
    finally:
        device.close()
