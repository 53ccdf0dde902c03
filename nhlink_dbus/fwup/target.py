"""The apply target: a regular file (an image) or a block device."""

from __future__ import annotations

import os
import stat

from nhlink_dbus.errors import TargetError


class FileTarget:
    """Positional I/O on the destination, opened once.

    ``hard_end`` is the byte offset writes may not pass: the device size for a
    block device, ``--max-size`` when given, none for a regular file (it grows,
    as with fwup).
    """

    def __init__(self, path: str, max_size_blocks: int | None = None) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise TargetError(f"Can't open '{path}': {exc.strerror}") from exc
        st = os.fstat(self.fd)
        self.is_block_device = stat.S_ISBLK(st.st_mode)
        self.size = os.lseek(self.fd, 0, os.SEEK_END)
        self.hard_end: int | None = self.size if self.is_block_device else None
        if max_size_blocks is not None:
            self.hard_end = max_size_blocks * 512

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
            raise TargetError(f"write failed at offset {offset}. Check media size.") from exc
        if written != len(data):
            raise TargetError(f"write failed at offset {offset}. Check media size.")

    def sync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise TargetError(f"sync of '{self.path}' failed: {exc.strerror}") from exc

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
