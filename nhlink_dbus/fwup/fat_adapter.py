"""Binds the applier's :class:`~nhlink_dbus.core.fwup_apply.FatOps` to mtools.

A ``fat_write`` resource is spooled to a temporary file (FAT resources are
boot files: kernels, configs) and copied in with one mtools call on commit.
"""

from __future__ import annotations

import tempfile

from nhlink_dbus.errors import TargetError
from nhlink_dbus.fwup.fat import FatFilesystem


class _SpooledFatWrite:
    def __init__(self, fs: FatFilesystem, path: str) -> None:
        self.fs = fs
        self.path = path
        self.tmp = tempfile.NamedTemporaryFile(prefix="nhlink-fat-", delete=True)  # noqa: SIM115

    def write(self, data: bytes) -> None:
        try:
            self.tmp.write(data)
        except OSError as exc:
            raise TargetError(f"fat_write: cannot spool data: {exc.strerror}") from exc

    def commit(self) -> None:
        try:
            self.tmp.flush()
            self.fs.write(self.path, self.tmp.name)
        finally:
            self.tmp.close()

    def abort(self) -> None:
        self.tmp.close()


class MtoolsFat:
    """FAT operations on the image or device at ``image_path``."""

    def __init__(self, image_path: str) -> None:
        self.image_path = image_path

    def _fs(self, block_offset: int) -> FatFilesystem:
        return FatFilesystem(self.image_path, block_offset)

    def mkfs(self, block_offset: int, block_count: int) -> None:
        self._fs(block_offset).mkfs(block_count)

    def open_write(self, block_offset: int, path: str) -> _SpooledFatWrite:
        return _SpooledFatWrite(self._fs(block_offset), path)

    def mv(self, block_offset: int, src: str, dst: str, force: bool) -> None:
        self._fs(block_offset).mv(src, dst, force)

    def rm(self, block_offset: int, path: str, must_exist: bool) -> None:
        self._fs(block_offset).rm(path, must_exist)

    def cp(self, block_offset: int, src: str, dst: str) -> None:
        self._fs(block_offset).cp(src, dst)

    def mkdir(self, block_offset: int, path: str) -> None:
        self._fs(block_offset).mkdir(path)

    def setlabel(self, block_offset: int, label: str) -> None:
        self._fs(block_offset).setlabel(label)

    def touch(self, block_offset: int, path: str) -> None:
        self._fs(block_offset).touch(path)

    def attrib(self, block_offset: int, path: str, attrib: str) -> None:
        self._fs(block_offset).attrib(path, attrib)

    def exists(self, block_offset: int, path: str) -> bool:
        return self._fs(block_offset).exists(path)

    def read(self, block_offset: int, path: str) -> bytes | None:
        return self._fs(block_offset).read(path)
