"""The apply target: the writer thread, its failures, and O_DIRECT transfers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nhlink_dbus.core.block_cache import SEGMENT, BlockCache
from nhlink_dbus.errors import TargetError
from nhlink_dbus.fwup.target import FileTarget


def test_streamed_writes_land_before_a_read_and_at_sync(tmp_path: Path) -> None:
    path = tmp_path / "img"
    target = FileTarget(str(path))
    data = [os.urandom(SEGMENT) for _ in range(3)]
    for i, segment in enumerate(data):
        target.pwrite_streamed(segment, i * SEGMENT)
    assert target.pread(SEGMENT, SEGMENT) == data[1]
    target.pwrite_streamed(data[0], 3 * SEGMENT)
    target.sync()
    target.close()
    assert path.read_bytes() == b"".join([*data, data[0]])


def test_a_failure_of_the_writer_thread_is_reported_by_the_next_call() -> None:
    target = FileTarget("/dev/full")  # every write fails with ENOSPC
    target.pwrite_streamed(bytes(SEGMENT), 2 * SEGMENT)
    for call in (
        lambda: target.pwrite(bytes(512), 0),
        lambda: target.pread(512, 0),
        target.sync,
        lambda: target.pwrite_streamed(bytes(SEGMENT), 0),
    ):
        with pytest.raises(TargetError, match=f"^write failed at offset {2 * SEGMENT}\\. Check"):
            call()
    target.close()


def test_direct_io_through_the_block_cache(tmp_path: Path) -> None:
    path = tmp_path / "img"
    path.write_bytes(b"\x5a" * (4 * SEGMENT))
    target = FileTarget(str(path), verify_writes=True, direct=True)
    assert target.direct, "O_DIRECT refused on the test folder's file system"
    cache = BlockCache(target, None, target.allocate, target.pwrite_streamed)
    streamed = os.urandom(2 * SEGMENT)
    cache.pwrite(streamed, SEGMENT, True)  # whole segments: the writer thread, aligned maps
    cache.pwrite(b"\x01" * 1024, 3 * SEGMENT + 512, False)  # read-modify-write at the flush
    assert cache.pread(700, SEGMENT + 100) == streamed[100:800]
    cache.flush()
    target.pwrite(b"\x02" * 512, 512)  # memory the cache did not allocate: bounced
    assert target.pread(1000, SEGMENT - 300) == b"\x5a" * 300 + streamed[:700]
    target.sync()
    target.close()
    image = path.read_bytes()
    assert image[512:1024] == b"\x02" * 512
    assert image[SEGMENT : 3 * SEGMENT] == streamed
    assert image[3 * SEGMENT : 4 * SEGMENT] == (
        b"\x5a" * 512 + b"\x01" * 1024 + b"\x5a" * (SEGMENT - 1536)
    )
