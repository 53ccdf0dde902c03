"""The apply target: a regular file (an image) or a block device."""

from __future__ import annotations

import collections
import mmap
import os
import queue
import stat
import threading

from nhlink_dbus.errors import TargetError

TYPE_CHECKING = False  # without importing typing (nhlink_dbus/core/lean.py)
if TYPE_CHECKING:
    from typing import Any

# O_DIRECT transfers: offsets and sizes in whole logical blocks (512 bytes; a 4Kn
# device refuses other writes, as it does fwup's), memory page-aligned (anonymous
# maps are; the block cache's segments come from allocate()).
_DIRECT_ALIGN = 512
_BOUNCE = 128 * 1024
BATCH_SEGMENTS = 4  # streamed segments per write (see FileTarget)
BATCHES_IN_FLIGHT = 2  # handed to the writer thread and not yet written

_Buffer = bytes | bytearray | memoryview


class FileTarget:
    """Positional I/O on the destination, opened once, the way fwup opens it.

    ``hard_end`` is the byte offset writes may not pass: the device size for a
    block device, ``--max-size`` when given, none for a regular file (it grows,
    as with fwup).

    Durability, by kind of target, is fwup's: a block device is written with
    ``O_DIRECT`` (each write reaches the device before the next, nothing waits
    in the page cache) and not synced, as fwup does (src/mmc_linux.c ``mmc_open``);
    where the kernel refuses ``O_DIRECT`` it is written through the page cache
    and ``fsync``'ed at the end instead. A regular file is not synced, as with
    fwup (the page cache writes it back); a character device such as
    ``/dev/null`` is neither synced nor read back. ``verify_writes`` reads every
    write back and compares it (fwup's ``--verify-writes``; its default is on
    for block devices, where the read comes from the device, and off for
    regular files, as fwup's).

    ``pwrite_streamed`` writes on a writer thread, as fwup's block cache does; a
    failure there is reported by a later call, with fwup's text for it (the session
    uses it for block devices). Where fwup hands its thread one 128 KiB segment at a
    time, consecutive segments are gathered here into one ``pwritev`` of up to
    :data:`BATCH_SEGMENTS` (and one read-back): the same bytes in the same places,
    with a tenth of the system calls and thread hand-offs. Up to
    :data:`BATCHES_IN_FLIGHT` batches are in flight while the next is gathered (a device
    that takes each write in turn, as O_DIRECT does, is kept busy); every segment
    handed over is written, even when the apply fails
    afterwards, as with fwup. Unlike fwup, a device that fails a write may already
    hold some of the segments after the failing one in its batch.
    """

    def __init__(
        self,
        path: str,
        max_size_blocks: int | None = None,
        verify_writes: bool | None = None,
        *,
        direct: bool | None = None,
    ) -> None:
        """``direct``: write with ``O_DIRECT`` (default: on block devices, as fwup)."""
        self.path = path
        existed = os.path.lexists(path)
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise TargetError(_open_failure(path, existed, exc)) from exc
        st = os.fstat(self.fd)
        self.is_block_device = stat.S_ISBLK(st.st_mode)
        self.is_char_device = stat.S_ISCHR(st.st_mode)
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o222 == 0:
            # Opened writable only because we are root: almost surely a mistake (as fwup says).
            os.close(self.fd)
            self.fd = -1
            raise TargetError(_open_failure(path, True, None))
        self.size = os.lseek(self.fd, 0, os.SEEK_END) if not self.is_char_device else 0
        self.hard_end: int | None = self.size if self.is_block_device else None
        if max_size_blocks is not None and max_size_blocks > 0:
            limit = max_size_blocks * 512
            if self.hard_end is None or not self.is_block_device or limit < self.hard_end:
                self.hard_end = limit
        if self.is_char_device:
            verify_writes = False
        elif verify_writes is None:
            verify_writes = self.is_block_device
        self.verify_writes = verify_writes
        if direct is None:
            direct = self.is_block_device
        self.direct = direct and _set_direct(self.fd)
        self._bounce: dict[str, mmap.mmap] = {}  # "read", "write": aligned scratch memory
        # The writer thread: batches of consecutive segments in, one result per batch
        # out (None, or the offset that failed); None as a job stops it.
        self._jobs: queue.SimpleQueue[tuple[list[_Buffer], int] | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._batch: list[_Buffer] = []
        self._batch_offset = 0  # where the gathered batch starts
        self._batch_end = 0
        self._in_flight: collections.deque[int] = collections.deque()  # segments per batch
        self._bad_offset: int | None = None
        self._writer: threading.Thread | None = None

    @property
    def soft_end(self) -> int:
        """fwup's soft end: a regular file's size at the start when it had one and no
        ``--max-size`` is given (writes may pass it, and move it; 0: none)."""
        if self.is_block_device or self.is_char_device or self.hard_end is not None:
            return 0
        return self.size

    @property
    def total_blocks(self) -> int:
        return (self.hard_end if self.hard_end is not None else self.size) // 512

    def allocate(self, size: int) -> bytearray | memoryview:
        """Memory for the block cache's segments: page-aligned when writing ``O_DIRECT``."""
        if self.direct:
            return memoryview(mmap.mmap(-1, size))
        # A memoryview: assigning a slice of a bytearray copies the source twice.
        return memoryview(bytearray(size))

    def pread(self, size: int, offset: int) -> bytes:
        self._settle()
        return self._pread(size, offset)

    def _pread(self, size: int, offset: int) -> bytes:
        try:
            if self.direct:
                return self._pread_direct(size, offset)
            return os.pread(self.fd, size, offset)
        except OSError as exc:
            raise TargetError(
                f"read of {size} bytes at offset {offset} failed: {exc.strerror}"
            ) from exc

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        self._settle()
        self._pwrite(data, offset)

    def pwrite_streamed(self, data: bytes | bytearray | memoryview, offset: int) -> int:
        """Write ``data`` (whole blocks) at ``offset`` on the writer thread. ``data``
        must stay unchanged until this target is done with it: the call returns how
        many of the buffers handed over before are (the oldest first); after any other
        call, all are."""
        self._check()
        done = 0
        if self._batch and (offset != self._batch_end or len(self._batch) >= BATCH_SEGMENTS):
            done = self._submit()
        if not self._batch:
            self._batch_offset = offset
        self._batch.append(data)
        self._batch_end = offset + len(data)
        return done

    def _submit(self) -> int:
        """Hand the gathered batch to the writer thread, once the oldest in flight has
        finished if there are as many as may be; return how many segments finished
        (raise if a write failed)."""
        done = self._wait_one() if len(self._in_flight) >= BATCHES_IN_FLIGHT else 0
        self._check()
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="nhlink-write")
            self._writer.daemon = True
            self._writer.start()
        self._jobs.put((self._batch, self._batch_offset))
        self._in_flight.append(len(self._batch))
        self._batch = []
        return done

    def _wait_one(self) -> int:
        """Wait for the oldest batch in flight; how many segments it had."""
        done = self._in_flight.popleft()
        failed = self._results.get()
        if failed is not None and self._bad_offset is None:
            self._bad_offset = failed
        return done

    def _wait(self) -> int:
        done = 0
        while self._in_flight:
            done += self._wait_one()
        return done

    def _check(self) -> None:
        if self._bad_offset is not None:
            # fwup's text for a failure of its writer thread (block_cache.c check_async_error).
            raise TargetError(f"write failed at offset {self._bad_offset}. Check media size.")

    def _settle(self) -> None:
        """Write what was handed over and wait for it; raise what the writer failed with
        (from then on)."""
        if self._batch and self._bad_offset is None:
            self._submit()
        self._batch = []
        self._wait()
        self._check()

    def _write_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._results.put(self._write_batch(*job))

    def _write_batch(self, batch: list[_Buffer], offset: int) -> int | None:
        """One batch: the offset of the first segment that failed, or None."""
        size = sum(len(data) for data in batch)
        try:
            written = os.pwritev(self.fd, batch, offset)
            if written == size and self.verify_writes:
                back = self._buffer("verify", size)
                if os.preadv(self.fd, [memoryview(back)[:size]], offset) == size:
                    at = offset
                    for data in batch:
                        if not _same(data, back, at - offset):
                            return at
                        at += len(data)
                    return None
            elif written == size:
                return None
        except OSError:
            pass
        # Something failed: segment by segment, as fwup writes them, to find which.
        for data in batch:
            try:
                self._pwrite(data, offset)
            except TargetError:
                return offset
            offset += len(data)
        return None

    def _pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        try:
            if self.direct and not _aligned(data, offset):
                data = self._bounced(data)
            written = os.pwrite(self.fd, data, offset)
        except OSError as exc:
            raise TargetError(
                f"writing {len(data)} bytes failed at offset {offset}. Check media size."
            ) from exc
        if written != len(data):
            raise TargetError(
                f"writing {len(data)} bytes failed at offset {offset}. Check media size."
            )
        if self.verify_writes:
            try:
                back = self._pread(len(data), offset)
            except TargetError as exc:
                raise TargetError(f"read back failed at offset {offset}") from exc
            # bytes against bytes: a memoryview compares item by item, 100x slower.
            if back != (data if isinstance(data, bytes) else bytes(data)):
                raise TargetError(f"write verification failed at offset {offset}")

    def _buffer(self, use: str, size: int) -> mmap.mmap:
        buf = self._bounce.get(use)
        if buf is None or len(buf) < size:
            if buf is not None:
                buf.close()
            buf = self._bounce[use] = mmap.mmap(-1, max(size, _BOUNCE))
        return buf

    def _bounced(self, data: bytes | bytearray | memoryview) -> memoryview:
        """``data`` copied to aligned memory (a write the cache did not allocate for)."""
        if len(data) % _DIRECT_ALIGN:
            raise TargetError(f"write of {len(data)} bytes is not in whole blocks")
        buf = self._buffer("write", len(data))
        buf[: len(data)] = data
        return memoryview(buf)[: len(data)]

    def _pread_direct(self, size: int, offset: int) -> bytes:
        start = offset - offset % _DIRECT_ALIGN
        end = min(-(-(offset + size) // _DIRECT_ALIGN) * _DIRECT_ALIGN, self.size)
        if end <= offset:
            return b""
        buf = self._buffer("read", end - start)
        got = os.preadv(self.fd, [memoryview(buf)[: end - start]], start)
        return bytes(buf[offset - start : min(start + got, offset + size) - start])

    def sync(self) -> None:
        """Wait for the writer thread, then make the writes durable where fwup's are
        (see the class docstring)."""
        self._settle()
        if not self.is_block_device or self.direct:
            return
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise TargetError(f"sync of '{self.path}' failed: {exc.strerror}") from exc

    def close(self) -> None:
        """Stop the writer thread (after the write in flight) and close the target."""
        try:  # noqa: SIM105  (contextlib is not loaded by nhlink-fwup's start)
            self._settle()  # what was handed over is written, as fwup's thread writes it
        except TargetError:
            pass
        if self._writer is not None:
            self._jobs.put(None)
            self._writer.join()
            self._writer = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        for buf in self._bounce.values():
            buf.close()
        self._bounce.clear()


def _set_direct(fd: int) -> bool:
    """Switch ``fd`` to O_DIRECT; False where the kernel refuses it."""
    import fcntl  # noqa: PLC0415  (block devices only)

    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
    except OSError:
        return False
    return True


def _aligned(data: bytes | bytearray | memoryview, offset: int) -> bool:
    """True for the block cache's own segments (page-aligned maps) at aligned offsets."""
    if offset % _DIRECT_ALIGN or len(data) % _DIRECT_ALIGN:
        return False
    # The cache hands over its segment memory whole or cut at the end of the target,
    # never from the middle: a view of one of our maps starts at the map's start.
    return isinstance(data, memoryview) and isinstance(data.obj, mmap.mmap)


def _open_failure(path: str, existed: bool, exc: OSError | None) -> str:
    """fwup's two texts for a destination it cannot open (and why, where the OS says)."""
    why = f" ({exc.strerror})" if exc is not None and exc.strerror else ""
    if existed:
        return (
            f"Cannot open '{path}' for output{why}.\n"
            "Check file permissions or the read-only tab if this is an SD Card."
        )
    return (
        f"Cannot create '{path}'{why}.\nCheck the path and permissions on the containing directory."
    )


_memcmp: Any = None


def _same(data: _Buffer, back: mmap.mmap, at: int) -> bool:
    """``data`` equals ``back[at:at + len(data)]``, compared without holding the GIL
    where ``data`` is writable memory (the cache's segments are): a comparison in
    Python copies both sides first, with the GIL held, which the main thread waits for."""
    global _memcmp
    size = len(data)
    if isinstance(data, bytes) or (isinstance(data, memoryview) and data.readonly):
        return bytes(data) == back[at : at + size]
    if _memcmp is None:
        import ctypes  # noqa: PLC0415

        func = ctypes.CDLL(None).memcmp
        func.restype = ctypes.c_int
        func.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
        _memcmp = (ctypes.c_char, func)
    char, func = _memcmp
    left = (char * size).from_buffer(data)
    right = (char * size).from_buffer(back, at)
    same = func(left, right, size) == 0
    del left, right  # release both buffers' exports
    return bool(same)
