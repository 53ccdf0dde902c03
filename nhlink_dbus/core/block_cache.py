"""fwup's write cache, modelled so that a failed apply leaves what fwup leaves.

fwup never writes the target directly: every write goes through a cache of 64
segments of 128 KiB (``src/block_cache.c``). The facts that decide what is on
the target after an error:

* only whole 512-byte blocks are marked dirty;
* a segment that becomes completely dirty through *streamed* writes (resource
  data, memsets) is written out at once; a non-streamed write (U-Boot
  environment, MBR, FAT) pins its segment in the cache until the final flush;
* at a cache miss with every segment in use, the least recently used segment is
  flushed (read-modify-write when partly dirty) and reused;
* the final flush writes segments from least to most recently used;
* on error the cache is dropped: what was not yet written never is.

:class:`PadToBlockWriter` is fwup's ``pad_to_block_writer``: it turns the
arbitrary byte runs of a decompressor into whole blocks and holds back the
last block (a run that ends exactly one block past a boundary stays buffered),
which is why a corrupt resource's final segment never reaches the target.

The target enters through the constructor (:class:`BlockDevice`); this module
does no I/O of its own. So does the memory of the segments (``allocate``: a
target opened with ``O_DIRECT`` needs page-aligned buffers). Buffers are reused:
a streamed segment, once written, keeps its place in the LRU order but gives its
buffer back (the target holds the same bytes; a later read fetches them again),
so streaming a resource uses one or two buffers, not 64.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from nhlink_dbus.errors import TargetError

TYPE_CHECKING = False  # without importing typing (nhlink_dbus/core/lean.py)
if TYPE_CHECKING:
    from typing import Protocol
else:
    from nhlink_dbus.core.lean import Protocol

BLOCK = 512
SEGMENT = 128 * 1024
BLOCKS_PER_SEGMENT = SEGMENT // BLOCK
NUM_SEGMENTS = 64
_ALL_DIRTY = b"\x01" * BLOCKS_PER_SEGMENT
_NONE_DIRTY = bytes(BLOCKS_PER_SEGMENT)

# A segment's memory: anything writable that slices like a bytearray.
SegmentBuffer = bytearray | memoryview


class BlockDevice(Protocol):
    """The target: positional reads and writes of a file or block device."""

    def pread(self, size: int, offset: int) -> bytes: ...

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None: ...


def _memory(size: int) -> memoryview:
    # Segment memory behind a memoryview: assigning a slice of a bytearray from a buffer
    # copies the buffer twice (into a temporary bytearray first), a memoryview once.
    return memoryview(bytearray(size))


class MediaTooSmall(TargetError):
    """A write beyond the hard end of the target."""


class _Segment:
    __slots__ = ("data", "dirty", "offset", "streamed", "valid")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.data: SegmentBuffer | None = None  # None: clean, nothing cached
        self.dirty = bytearray(BLOCKS_PER_SEGMENT)
        self.valid = bytearray(BLOCKS_PER_SEGMENT)
        self.streamed = True


class BlockCache:
    """Write-back cache with fwup's flushing rules.

    ``end_offset`` is the last allowed byte offset (``None``: unlimited, as a
    regular file grows); a segment write that starts at or past it fails with
    ``write failed at offset N. Check media size.``; one that straddles it is
    clipped.
    """

    def __init__(
        self,
        device: BlockDevice,
        end_offset: int | None = None,
        allocate: Callable[[int], SegmentBuffer] | None = None,
        write_streamed: Callable[[SegmentBuffer, int], int] | None = None,
        soft_end: int = 0,
    ) -> None:
        """``write_streamed(data, offset)``, when given, writes a completed streamed
        segment the way fwup's writer thread does: it may return before the write is
        done and reports a failure from a later call. It keeps ``data`` until it says
        it is done with it: it returns how many of the buffers handed to it before
        are free again (the oldest first), and after any other call of the device
        returns, all are.

        ``soft_end`` is fwup's soft end of a regular file that had a size (0: none):
        the size it had, pushed to the end of every segment read or written past it.
        :attr:`soft_end` says where it is (MBR and GPT ``expand`` read it)."""
        self._dev = device
        self._end = end_offset
        self._allocate = allocate or _memory
        self._free: list[SegmentBuffer] = []  # buffers of segments that hold no data
        self._streamed_write = write_streamed
        self._in_flight: list[SegmentBuffer] = []  # the device may still be writing them
        self._segs: OrderedDict[int, _Segment] = OrderedDict()  # LRU order, oldest first
        self._trimmed: set[int] = set()
        self.soft_end = soft_end

    @property
    def end_offset(self) -> int | None:
        """The offset no write may reach (None: unlimited)."""
        return self._end

    # -- segment management -------------------------------------------------------

    def _get(self, offset: int) -> _Segment:
        seg = self._segs.get(offset)
        if seg is not None:
            self._segs.move_to_end(offset)
            return seg
        if len(self._segs) >= NUM_SEGMENTS:
            _old_offset, old = self._segs.popitem(last=False)
            try:
                self._flush_segment(old)
            finally:
                self._release(old)
        seg = _Segment(offset)
        self._segs[offset] = seg
        return seg

    def _buffer(self) -> SegmentBuffer:
        return self._free.pop() if self._free else self._allocate(SEGMENT)

    def _release(self, seg: _Segment) -> None:
        """Forget the segment's data (it is clean or dropped); keep its buffer for reuse."""
        if seg.data is not None:
            self._free.append(seg.data)
            seg.data = None
            seg.valid[:] = _NONE_DIRTY

    def _landed(self) -> None:
        """A device call returned: the streamed writes handed over before are done."""
        if self._in_flight:
            self._free += self._in_flight
            self._in_flight.clear()

    def _reach(self, offset: int) -> None:
        """fwup's calculate_io_size: a segment read or written past a soft end moves it."""
        if self.soft_end and offset + SEGMENT > self.soft_end:
            self.soft_end = offset + SEGMENT

    def _read_segment(self, offset: int) -> bytes:
        if offset in self._trimmed:
            return bytes(SEGMENT)
        self._reach(offset)
        data = self._dev.pread(SEGMENT, offset)
        self._landed()
        if len(data) < SEGMENT:
            data += bytes(SEGMENT - len(data))
        return data

    def _make_valid(self, seg: _Segment) -> SegmentBuffer:
        if seg.data is None:
            seg.data = self._buffer()
            seg.data[:] = self._read_segment(seg.offset)
            seg.valid[:] = _ALL_DIRTY
            return seg.data
        if 0 in seg.valid:
            disk = self._read_segment(seg.offset)
            for i in range(BLOCKS_PER_SEGMENT):
                if not seg.valid[i]:
                    seg.data[i * BLOCK : (i + 1) * BLOCK] = disk[i * BLOCK : (i + 1) * BLOCK]
            seg.valid[:] = _ALL_DIRTY
        return seg.data

    def _whole(self, offset: int) -> bool:
        """True if a segment write at ``offset`` is neither refused nor clipped."""
        return self._end is None or offset + SEGMENT <= self._end

    def _write_out(self, data: bytes | bytearray | memoryview, offset: int) -> bool:
        """Write a segment; False when the target's end clipped it."""
        whole = True
        if self._end is not None:
            if offset >= self._end:
                raise MediaTooSmall(f"write failed at offset {offset}. Check media size.")
            if offset + len(data) > self._end:
                data = memoryview(data)[: self._end - offset]
                whole = False
        self._reach(offset)
        self._dev.pwrite(data, offset)
        self._landed()
        self._trimmed.discard(offset)
        return whole

    def _flush_segment(self, seg: _Segment) -> None:
        if seg.data is None or 1 not in seg.dirty:
            return
        try:
            data = self._make_valid(seg)
            self._write_out(data, seg.offset)
        finally:
            seg.dirty[:] = _NONE_DIRTY

    # -- public API ---------------------------------------------------------------------

    def pwrite(self, buf: bytes | bytearray | memoryview, offset: int, streamed: bool) -> None:
        """Write whole blocks at a block-aligned offset (as fwup's cache requires)."""
        view = memoryview(buf)
        while view:
            seg_off = offset - offset % SEGMENT
            into = offset - seg_off
            n = min(len(view), SEGMENT - into)
            seg = self._get(seg_off)
            data = seg.data
            if data is None:
                data = seg.data = self._buffer()
            data[into : into + n] = view[:n]
            first = into // BLOCK
            last = first + n // BLOCK
            flags = _ALL_DIRTY[: last - first]
            seg.dirty[first:last] = flags
            seg.valid[first:last] = flags
            if not streamed:
                seg.streamed = False
            elif seg.streamed and 0 not in seg.dirty:
                # A completely dirty streamed segment goes to the target at once.
                if self._streamed_write is not None and self._whole(seg_off):
                    # Asynchronously, as fwup's writer thread does; the buffer serves
                    # again once the device says it is done with it.
                    done = self._streamed_write(data, seg_off)
                    self._trimmed.discard(seg_off)
                    seg.dirty[:] = _NONE_DIRTY
                    if done:
                        self._free += self._in_flight[:done]
                        del self._in_flight[:done]
                    self._in_flight.append(data)
                    seg.data = None
                    seg.valid[:] = _NONE_DIRTY
                else:
                    whole = self._write_out(data, seg_off)
                    seg.dirty[:] = _NONE_DIRTY
                    if whole:
                        # The target holds these bytes: the buffer serves the next segment.
                        self._release(seg)
            view = view[n:]
            offset += n

    def pread(self, count: int, offset: int) -> bytes:
        """Read through the cache (sees writes not yet flushed)."""
        out = bytearray()
        while count > 0:
            seg_off = offset - offset % SEGMENT
            into = offset - seg_off
            n = min(count, SEGMENT - into)
            data = self._make_valid(self._get(seg_off))
            out += data[into : into + n]
            count -= n
            offset += n
        return bytes(out)

    def trim(self, offset: int, count: int) -> None:
        """Forget whole segments in the range; reads there return zeros."""
        start = -(-offset // SEGMENT) * SEGMENT
        end = (offset + count) // SEGMENT * SEGMENT
        for seg_off in range(start, end, SEGMENT):
            self._trimmed.add(seg_off)
            seg = self._segs.pop(seg_off, None)
            if seg is not None:
                self._release(seg)

    def flush(self) -> None:
        """Write every dirty segment, least recently used first."""
        for seg in list(self._segs.values()):
            self._flush_segment(seg)

    def discard(self) -> None:
        """Drop everything not yet written (fwup's behaviour after an error)."""
        for seg in self._segs.values():
            self._release(seg)
        self._segs.clear()

    def forget(self, start: int, end: int | None) -> None:
        """Flush and forget the cached segments overlapping ``[start, end)``."""
        for seg_off in [o for o in self._segs if _overlaps(o, start, end)]:
            seg = self._segs.pop(seg_off)
            try:
                self._flush_segment(seg)
            finally:
                self._release(seg)


class PadToBlockWriter:
    """Sequential byte runs in, whole 512-byte blocks out (fwup's ptbw)."""

    def __init__(self, cache: BlockCache) -> None:
        self._cache = cache
        self._buf = bytearray(BLOCK)
        self._index = 0
        self._offset = 0

    def pwrite(self, data: bytes | memoryview, offset: int) -> None:
        view = memoryview(data)
        count = len(view)
        if self._index and offset == self._offset + self._index:
            # Fast path of fwup's ptbw_pwrite for sequential data: complete the
            # buffered block, then write whole blocks, in a single cache write.
            # As in fwup, a remainder of exactly one block stays buffered.
            fill = BLOCK - self._index
            if count < fill:
                self._buf[self._index : self._index + count] = view
                self._index += count
                return
            rest = count - fill
            bulk = rest & ~(BLOCK - 1) if rest > BLOCK else 0
            # fwup makes one cache write of the buffered block and the bulk; two writes
            # (the completed block, then the bulk from the caller's buffer) leave the
            # cache and the target in the same state without copying the bulk.
            self._buf[self._index :] = view[:fill]
            self._cache.pwrite(self._buf, self._offset, True)
            if bulk:
                self._cache.pwrite(view[fill : fill + bulk], self._offset + BLOCK, True)
            tail = rest - bulk
            self._offset += BLOCK + bulk
            self._buf[:tail] = view[fill + bulk :]
            self._index = tail
            return
        if self._index:
            current = self._offset + self._index
            if offset < current:
                raise TargetError("internal: non-sequential raw write")
            if offset < self._offset + BLOCK:
                # A small hole inside the buffered block: zero-fill up to it.
                gap = offset - current
                self._buf[self._index : self._index + gap] = bytes(gap)
                self._index += gap
                self.pwrite(view, offset)
                return
            self.flush()
        misalign = offset % BLOCK
        if misalign:
            self._buf[:misalign] = bytes(misalign)
            self._index = misalign
            self._offset = offset - misalign
            self.pwrite(view, offset)
            return
        if count > BLOCK:
            whole = count & ~(BLOCK - 1)
            self._cache.pwrite(view[:whole], offset, True)
            offset += whole
            count -= whole
            view = view[whole:]
        if count:
            self._buf[:count] = view
            self._index = count
            self._offset = offset

    def flush(self) -> None:
        if self._index:
            self._buf[self._index :] = bytes(BLOCK - self._index)
            self._cache.pwrite(self._buf, self._offset, True)
            self._index = 0


def _overlaps(seg_off: int, start: int, end: int | None) -> bool:
    return seg_off + SEGMENT > start and (end is None or seg_off < end)


def sync_range(cache: BlockCache, start: int, end: int | None) -> None:
    """Flush and forget the cached segments overlapping ``[start, end)``.

    Used before a tool outside the cache (mtools, for FAT work) touches that
    region of the target directly, so both see the same bytes.
    """
    cache.forget(start, end)
