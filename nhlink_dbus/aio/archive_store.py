"""Downloading and verifying archives (protocol.md §7) into the archives folder.

The file is downloaded to ``<dir>/<uuid>.fw.download`` with the same downloader
and retry policy as firmware, renamed to ``<dir>/<uuid>.fw`` and verified like
``fwup -V`` with the archive keys (signature and every resource). A file that
fails verification is deleted: applications only ever see verified archives.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from pathlib import Path

from nhlink_dbus.aio.downloader import download
from nhlink_dbus.core.download_policy import RetryPolicy
from nhlink_dbus.core.hub_messages import ArchiveInfo
from nhlink_dbus.errors import FirmwareError, TargetError
from nhlink_dbus.fwup.local_firmware import LocalFirmwareError, inspect_fd

_SAFE_UUID = re.compile(r"[0-9A-Za-z-]{1,64}")


class _FileSink:
    """A ChunkSink appending to a file; ``restart`` truncates it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = path.open("wb")

    async def write(self, chunk: bytes) -> None:
        await asyncio.to_thread(self.fh.write, chunk)

    async def restart(self) -> None:
        self.fh.seek(0)
        self.fh.truncate()

    def close(self) -> None:
        self.fh.close()


async def fetch_archive(
    info: ArchiveInfo, public_keys: Sequence[str], folder: str, policy: RetryPolicy
) -> str:
    """Download, verify and keep one archive; returns its path."""
    if not _SAFE_UUID.fullmatch(info.uuid):
        raise FirmwareError("archive uuid is not a plain UUID")
    directory = Path(folder)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TargetError(f"cannot create {directory}: {exc.strerror}") from exc
    final = directory / f"{info.uuid}.fw"
    temp = directory / f"{info.uuid}.fw.download"
    sink = _FileSink(temp)
    try:
        await download(info.url, sink, policy)
    except BaseException:
        sink.close()
        temp.unlink(missing_ok=True)
        raise
    sink.close()
    os.replace(temp, final)
    fd = os.open(final, os.O_RDONLY | os.O_CLOEXEC)
    try:
        await asyncio.to_thread(inspect_fd, fd, public_keys)
    except LocalFirmwareError as exc:
        final.unlink(missing_ok=True)
        raise FirmwareError(f"archive failed verification: {exc}") from exc
    finally:
        os.close(fd)
    return str(final)
