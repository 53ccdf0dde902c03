"""The apply target: a regular file (an image) or a block device."""

from __future__ import annotations

import os
import stat

from nhlink_dbus.errors import TargetError


class FileTarget:
    """Positional I/O on the destination, opened once, the way fwup opens it.

    ``hard_end`` is the byte offset writes may not pass: the device size for a
    block device, ``--max-size`` when given, none for a regular file (it grows,
    as with fwup).

    Durability, by kind of target: a block device is fsync'ed when the apply
    ends (fwup writes it with O_DIRECT and never syncs; fsync also empties the
    drive's write cache, so ours is at least as durable); a regular file is not
    synced, as with fwup (the page cache writes it back); a character device
    such as ``/dev/null`` is neither synced nor read back. ``verify_writes``
    reads every write back and compares it (fwup's ``--verify-writes``; its
    default is on for block devices and off for regular files, as fwup's).
    """

    def __init__(
        self,
        path: str,
        max_size_blocks: int | None = None,
        verify_writes: bool | None = None,
    ) -> None:
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

    @property
    def total_blocks(self) -> int:
        return (self.hard_end if self.hard_end is not None else self.size) // 512

    def pread(self, size: int, offset: int) -> bytes:
        try:
            return os.pread(self.fd, size, offset)
        except OSError as exc:
            raise TargetError(
                f"read of {size} bytes at offset {offset} failed: {exc.strerror}"
            ) from exc

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        try:
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
                back = os.pread(self.fd, len(data), offset)
            except OSError as exc:
                raise TargetError(f"read back failed at offset {offset}") from exc
            if back != data:
                raise TargetError(f"write verification failed at offset {offset}")

    def sync(self) -> None:
        """Make the writes durable where fwup's are (see the class docstring)."""
        if not self.is_block_device:
            return
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise TargetError(f"sync of '{self.path}' failed: {exc.strerror}") from exc

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


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
