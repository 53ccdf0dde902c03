"""The block cache's memory: streamed segments give their buffer back once written."""

from __future__ import annotations

import os

import pytest

from nhlink_dbus.core.block_cache import (
    NUM_SEGMENTS,
    SEGMENT,
    BlockCache,
    MediaTooSmall,
    PadToBlockWriter,
)
from tests.fwup.test_stream_chunking import MemoryDevice


class Device(MemoryDevice):
    """An in-memory target, growing as written, that remembers every write."""

    def __init__(self, size: int = 0) -> None:
        super().__init__(bytes(size))
        self.writes: list[tuple[int, int]] = []

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        super().pwrite(data, offset)
        self.writes.append((offset, len(data)))


class CountingAllocator:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, size: int) -> bytearray:
        self.count += 1
        return bytearray(os.urandom(size))  # garbage: nothing may rely on zeroed buffers


def test_streaming_reuses_one_buffer_and_writes_each_segment_once() -> None:
    dev, alloc = Device(), CountingAllocator()
    cache = BlockCache(dev, allocate=alloc)
    data = os.urandom(3 * NUM_SEGMENTS * SEGMENT + 4096)
    writer = PadToBlockWriter(cache)
    for start in range(0, len(data), 16377):  # odd pieces, as inflated reads are
        writer.pwrite(data[start : start + 16377], 512 + start)
    writer.flush()
    cache.flush()
    assert alloc.count <= 2
    assert dev.data[512 : 512 + len(data)] == data
    assert len({offset for offset, _size in dev.writes}) == len(dev.writes)


def test_a_written_segment_reads_back_from_the_target() -> None:
    dev, alloc = Device(), CountingAllocator()
    cache = BlockCache(dev, allocate=alloc)
    first = os.urandom(SEGMENT)
    cache.pwrite(first, 0, True)  # whole and streamed: written at once, buffer given back
    assert dev.data == first
    cache.pwrite(b"\xaa" * 512, 1024, False)  # pinned in the cache, over a released buffer
    assert cache.pread(2048, 0) == first[:1024] + b"\xaa" * 512 + first[1536:2048]
    assert dev.data == first  # not yet written
    cache.flush()
    assert dev.data == first[:1024] + b"\xaa" * 512 + first[1536:]


def test_discard_drops_pinned_writes_and_keeps_the_buffers() -> None:
    dev, alloc = Device(SEGMENT * 4), CountingAllocator()
    cache = BlockCache(dev, allocate=alloc)
    for i in range(4):
        cache.pwrite(b"\x11" * 512, i * SEGMENT, False)
    cache.discard()
    cache.flush()
    assert dev.data == bytes(SEGMENT * 4)
    for i in range(4):
        cache.pwrite(b"\x22" * 512, i * SEGMENT, False)
    cache.flush()
    assert alloc.count == 4
    assert all(dev.data[i * SEGMENT : i * SEGMENT + 512] == b"\x22" * 512 for i in range(4))


def test_a_segment_clipped_by_the_end_keeps_its_bytes_in_the_cache() -> None:
    dev = Device()
    cache = BlockCache(dev, end_offset=SEGMENT + 1024)
    tail = os.urandom(SEGMENT)
    cache.pwrite(tail, SEGMENT, True)
    assert len(dev.data) == SEGMENT + 1024
    assert cache.pread(4096, SEGMENT + 1024) == tail[1024:5120]  # past the end: cached
    with pytest.raises(MediaTooSmall, match=f"^write failed at offset {2 * SEGMENT}"):
        cache.pwrite(tail, 2 * SEGMENT, True)


class DeferringDevice(Device):
    """Writes a streamed segment only when its next call comes, from the memory it was
    given then: a buffer reused too early shows up as wrong bytes on the target."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: tuple[bytes | bytearray | memoryview, int] | None = None
        self.in_flight_max = 0

    def _land(self) -> None:
        if self.pending is not None:
            data, offset = self.pending
            self.pending = None
            super().pwrite(data, offset)

    def pwrite_streamed(self, data: bytes | bytearray | memoryview, offset: int) -> int:
        landed = self.pending is not None
        self._land()
        self.pending = (data, offset)
        return 1 if landed else 0

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        self._land()
        super().pwrite(data, offset)

    def pread(self, size: int, offset: int) -> bytes:
        self._land()
        return super().pread(size, offset)


def test_a_streamed_write_in_flight_keeps_its_buffer() -> None:
    dev, alloc = DeferringDevice(), CountingAllocator()
    cache = BlockCache(dev, allocate=alloc, write_streamed=dev.pwrite_streamed)
    data = os.urandom(5 * SEGMENT)
    cache.pwrite(b"\x33" * 512, 7 * SEGMENT, False)  # pinned until the flush
    writer = PadToBlockWriter(cache)
    for start in range(0, len(data), 16384):
        writer.pwrite(data[start : start + 16384], start)
    writer.flush()
    assert cache.pread(512, 3 * SEGMENT) == data[3 * SEGMENT : 3 * SEGMENT + 512]
    cache.flush()
    dev.pwrite(b"", 0)  # a last call lands the write in flight
    assert dev.data[: len(data)] == data
    assert dev.data[7 * SEGMENT : 7 * SEGMENT + 512] == b"\x33" * 512
    assert alloc.count <= 4
